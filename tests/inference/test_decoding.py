"""KV-cache decoding against the full-recompute model: logits at every step (fake-quant and packed),
greedy tokens equal to `greedy_generate`, batch == one by one, seeds, and refused requests."""
import numpy as np
import mindspore as ms
import pytest

from bitcpm_ms.app.predict import greedy_generate
from bitcpm_ms.inference import CachedLM, GenerationError, generate
from bitcpm_ms.inference.decoder import DecodeMultiStepGraph, DecodeStepGraph
from bitcpm_ms.inference.fused_layer import unfusable_reason
from bitcpm_ms.inference.fused_model import model_unfusable_reason
from bitcpm_ms.quant.convert import convert_model
from bitcpm_ms.testing import random_bitcpm

from .conftest import PROMPTS, SMALL, quant


class Recording:
    """A CachedLM that keeps the logits of every prefill / step call (one token per call: the multi-step
    graph returns no logits)."""

    decode_steps = 1

    def __init__(self, lm):
        self.lm, self.logits = lm, []

    def __getattr__(self, name):
        return getattr(self.lm, name)

    def prefill(self, *args):
        out = self.lm.prefill(*args)
        self.logits.append(out[0])
        return out

    def prefill_into(self, *args):
        out = self.lm.prefill_into(*args)
        self.logits.append(out)
        return out

    def step(self, *args):
        out = self.lm.step(*args)
        self.logits.append(out[0])
        return out


def full_logits(net, ids):
    """Full-recompute logits [seq_length, V] of one sequence, right-padded like greedy_generate."""
    seq = SMALL["seq_length"]
    buf = np.zeros((1, seq), np.int32)
    buf[0, :len(ids)] = ids
    return net(ms.Tensor(buf))[0].asnumpy().reshape(seq, -1)


def check_every_step(net, lm, prompts, max_new_tokens=12, tol=1e-5):
    rec = Recording(lm)
    out = generate(rec, prompts, max_new_tokens=max_new_tokens)
    worst = 0.0
    for b, prompt in enumerate(prompts):
        full = full_logits(net, prompt + out.tokens[b])
        for i in range(len(out.tokens[b])):
            cached = rec.logits[i][b]
            ref = full[len(prompt) - 1 + i]
            worst = max(worst, float(np.abs(cached - ref).max() / max(1.0, np.abs(ref).max())))
    assert len(rec.logits) == max_new_tokens     # one prefill + (max_new_tokens - 1) steps
    assert worst < tol, worst
    return out


def test_cached_logits_equal_full_recompute_fake_quant(fake_quant):
    check_every_step(*fake_quant, PROMPTS)


def test_mindspore_ops_attention_equals_full_recompute(fake_quant):
    """The decode step without the fused C++ attention kernel (the form for non-CPU backends)."""
    net, lm = fake_quant
    ops_lm = CachedLM(net, fused_attention=False)
    ops_lm.prefill_graph = lm.prefill_graph           # the same prefill graph, compiled once
    assert not ops_lm.step_graph.fused_attention and lm.step_graph.fused_attention
    check_every_step(net, ops_lm, PROMPTS)


def test_cached_logits_equal_full_recompute_packed_a8(packed_a8):
    """The default CPU step of a packed model: one DecodeLayer op per layer."""
    net, lm = packed_a8
    assert type(net.model.layers[0].attention.wq).__name__ == "PackedTernaryLinear"
    assert lm.step_graph.fused_layers and not lm.step_graph.fused_attention
    check_every_step(net, lm, PROMPTS)


def test_packed_per_op_step_equals_full_recompute(packed_a8):
    """The packed model with the layers as the model's own cells (fused attention only)."""
    net, lm = packed_a8
    ops_lm = CachedLM(net, fused_layers=False)
    ops_lm.prefill_graph = lm.prefill_graph
    assert ops_lm.step_graph.fused_attention and not ops_lm.step_graph.fused_layers
    check_every_step(net, ops_lm, PROMPTS[:2])


def test_packed_weight_only_fused_layers_equal_full_recompute():
    net = convert_model(random_bitcpm(SMALL, quant(None), seed=3))
    lm = CachedLM(net)
    assert lm.step_graph.fused_layers
    check_every_step(net, lm, PROMPTS[1:], max_new_tokens=6)


def _two_prefilled_caches(lm):
    """PROMPTS prefilled into two identical caches: (first greedy token [3, 1], prompt lengths [3],
    [cache, cache]), for comparing two decoders from the same state."""
    lengths = np.array([len(p) for p in PROMPTS], np.int32)
    ids = np.zeros((3, 16), np.int32)
    for b, p in enumerate(PROMPTS):
        ids[b, :len(p)] = p
    caches = [lm.new_cache(3, 64), lm.new_cache(3, 64)]
    for cache in caches:
        logits, keys, values = lm.prefill(ids, lengths)
        cache.write_prompt(keys, values)
    return np.argmax(logits, -1).astype(np.int32)[:, None], lengths, caches


def _check_multi_step_equals_single_steps(lm):
    """From two identically prefilled caches: one multi-step call and decode_steps one-step calls with
    host-written caches give the same tokens and the same caches, bit for bit. Returns the caches."""
    first, lengths, caches = _two_prefilled_caches(lm)
    tokens = lm.multi_step(first, lengths, caches[0])
    cur, pos, steps = first, lengths.copy(), []
    for _ in range(lm.decode_steps):
        logits, keys, values = lm.step(cur, pos, caches[1])
        caches[1].write_step(keys, values, pos)
        cur, pos = np.argmax(logits, -1).astype(np.int32)[:, None], pos + 1
        steps.append(cur[:, 0])
    np.testing.assert_array_equal(tokens, np.stack(steps, 1))
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        np.testing.assert_array_equal(a, b)
    return caches


def test_multi_step_greedy_equals_one_step_and_fills_the_same_cache(packed_a8):
    """K greedy steps per graph call (the layer ops write the cache in place) give the tokens, the token
    counts and the cache of K one-step calls with host-written caches."""
    net, lm = packed_a8
    k = CachedLM.DEFAULT_DECODE_STEPS
    assert lm.decode_steps == k and lm.multi_step_graph is not None
    one = Recording(lm)
    for n in (k + 5, 2):                          # a full chunk and a partial one; one chunk mostly dropped
        multi, single = generate(lm, PROMPTS, max_new_tokens=n), generate(one, PROMPTS, max_new_tokens=n)
        assert multi.tokens == single.tokens and multi.finish_reasons == ["length"] * 3
        assert multi.stats.decode_tokens == single.stats.decode_tokens == 3 * (n - 1)
        assert (multi.stats.decode_calls, single.stats.decode_calls) == (-(-(n - 1) // k), n - 1)
    eos = generate(one, PROMPTS, max_new_tokens=8).tokens[1][3]    # row 1 stops inside the first chunk
    stopped = generate(lm, PROMPTS, max_new_tokens=8, eos_token_id=eos)
    assert stopped.tokens == generate(one, PROMPTS, max_new_tokens=8, eos_token_id=eos).tokens
    assert stopped.finish_reasons[1] == "eos"
    decode = lambda ids: "".join(f"<{i}>" for i in ids)     # noqa: E731
    stop = dict(max_new_tokens=12, decode=decode, stop_strings=[f"<{single.tokens[0][0]}><"])
    got, want = generate(lm, PROMPTS[:1], **stop), generate(one, PROMPTS[:1], **stop)
    assert (got.texts, got.tokens, got.finish_reasons) == (want.texts, want.tokens, ["stop"])
    _check_multi_step_equals_single_steps(lm)       # the caches after one multi-step call and k single steps


def test_whole_model_op_equals_one_layer_op_per_layer(packed_a8):
    """The multi-step graph as one DecodeModel op (the default for a packed float32 model) and as one
    DecodeLayer op per layer give the same tokens and fill the same caches."""
    net, lm = packed_a8
    assert lm.multi_step_graph.whole_model and model_unfusable_reason(net) is None
    names = [p.name for p in net.get_parameters()]
    per_layer = DecodeMultiStepGraph(net, lm.decode_steps, whole_model=False)
    whole = DecodeMultiStepGraph(net, lm.decode_steps)
    assert not per_layer.whole_model and whole.whole_model
    assert [p.name for p in net.get_parameters()] == names         # borrowing renamed nothing
    first, lengths, caches = _two_prefilled_caches(lm)
    first = ms.Tensor(first)
    for _ in range(2):                            # a second call continues from the caches the first wrote
        whole = lm.multi_step_graph(first, ms.Tensor(lengths), *caches[0].tensors).asnumpy()
        layers = per_layer(first, ms.Tensor(lengths), *caches[1].tensors).asnumpy()
        np.testing.assert_array_equal(whole, layers)
        first, lengths = ms.Tensor(whole[:, -1:]), lengths + lm.decode_steps
    for a, b in zip(caches[0].keys + caches[0].values, caches[1].keys + caches[1].values):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_whole_model_op_needs_a_float32_llama_embedding(packed_a8, fake_quant):
    net, _ = packed_a8
    assert "layer 0: not every projection" in model_unfusable_reason(fake_quant[0])
    table = net.model.tok_embeddings.embedding_weight if hasattr(net.model.tok_embeddings, "embedding_weight") \
        else net.model.tok_embeddings.cell.embedding_weight
    saved = table.dtype
    table.set_dtype(ms.float16)
    try:
        assert "float32 embedding" in model_unfusable_reason(net)
        with pytest.raises(ValueError, match="whole_model=True but .*float32 embedding"):
            DecodeMultiStepGraph(net, 4, whole_model=True)
    finally:
        table.set_dtype(saved)


def test_sampling_and_repetition_penalty_decode_one_token_per_call(packed_a8):
    _, lm = packed_a8
    for kw in (dict(temperature=0.8, top_p=0.9, seed=3), dict(repetition_penalty=1.3)):
        out = generate(lm, PROMPTS[:1], max_new_tokens=6, **kw)
        assert out.stats.decode_calls == 5 and out.stats.decode_tokens == 5


def test_multi_step_needs_fused_layers(fake_quant):
    net, lm = fake_quant
    assert lm.decode_steps == 1 and lm.multi_step_graph is None
    with pytest.raises(GenerationError, match="decode_steps=4: .*every layer as one DecodeLayer op.*PackedTernary"):
        CachedLM(net, decode_steps=4)
    with pytest.raises(GenerationError, match="decode_steps must be an integer >= 1"):
        CachedLM(net, decode_steps=0)
    with pytest.raises(GenerationError, match="one token per call"):
        lm.multi_step(np.zeros((1, 1), np.int32), np.zeros(1, np.int32), lm.new_cache(1, 64))


def test_fake_quant_model_cannot_take_fused_layers(fake_quant):
    net, lm = fake_quant
    assert not lm.step_graph.fused_layers
    assert "PackedTernaryLinear" in unfusable_reason(net.model.layers[0])
    with pytest.raises(ValueError, match="cannot be fused: not every projection"):
        DecodeStepGraph(net, fused_layers=True)


def test_greedy_equals_greedy_generate_and_batch_equals_one_by_one(fake_quant):
    net, lm = fake_quant
    batch = generate(lm, PROMPTS, max_new_tokens=10)
    for b, prompt in enumerate(PROMPTS):
        assert batch.tokens[b] == greedy_generate(net, prompt, 10, SMALL["seq_length"])
        assert generate(net, [prompt], max_new_tokens=10).tokens[0] == batch.tokens[b]   # the model itself
    assert batch.finish_reasons == ["length"] * 3


def test_sampling_seed_reproduces_and_batch_equals_one_by_one(fake_quant):
    _, lm = fake_quant
    kw = dict(max_new_tokens=10, temperature=0.9, top_k=50, top_p=0.9, repetition_penalty=1.2)
    a = generate(lm, PROMPTS, seed=123, **kw)
    assert generate(lm, PROMPTS, seed=123, **kw).tokens == a.tokens
    assert generate(lm, PROMPTS, seed=124, **kw).tokens != a.tokens
    assert [generate(lm, [p], seed=123, **kw).tokens[0] for p in PROMPTS] == a.tokens
    assert a.seed == 123 and generate(lm, PROMPTS[:1], **kw).seed is not None


def test_eos_stops_a_row_and_stats_count_tokens(fake_quant):
    _, lm = fake_quant
    free = generate(lm, PROMPTS, max_new_tokens=8)
    eos = free.tokens[1][3]                       # make row 1's 4th token the EOS
    out = generate(lm, PROMPTS, max_new_tokens=8, eos_token_id=eos)
    assert out.tokens[1] == free.tokens[1][:free.tokens[1].index(eos) + 1]
    assert out.finish_reasons[1] == "eos"
    s = out.stats
    assert s.prompt_tokens == sum(map(len, PROMPTS)) and s.decode_calls == max(map(len, out.tokens)) - 1
    assert s.decode_tokens == sum(len(t) - 1 for t in out.tokens)
    assert s.prefill_tokens_per_s > 0 and s.decode_tokens_per_s > 0


def test_stop_strings_end_a_row(fake_quant):
    _, lm = fake_quant
    decode = lambda ids: "".join(f"<{i}>" for i in ids)     # noqa: E731
    free = generate(lm, PROMPTS[:1], max_new_tokens=8, decode=decode)
    stop = f"<{free.tokens[0][2]}>"
    out = generate(lm, PROMPTS[:1], max_new_tokens=8, decode=decode, stop_strings=[stop])
    assert out.finish_reasons == ["stop"] and out.texts[0] == free.texts[0][:free.texts[0].index(stop)]


@pytest.mark.parametrize("prompts, kw, match", [
    ([[]], {}, "prompt 0 is empty"),
    ([], {}, "no prompts"),
    ([[1, 2]], dict(max_new_tokens=63), "max_new_tokens 63 runs past the context"),
    ([list(range(1, 66))], {}, "more than the context of 64"),
    ([[1, 600]], {}, "outside the vocabulary"),
    ([[1, 2]], dict(temperature=-1.0), "temperature"),
    ([[1, 2]], dict(top_p=0.0), "top_p"),
    ([[1, 2]], dict(top_p=1.01), "top_p"),
    ([[1, 2]], dict(stop_strings=["x"]), "decode function"),
])
def test_bad_requests_are_named_errors(fake_quant, prompts, kw, match):
    with pytest.raises(GenerationError, match=match):
        generate(fake_quant[1], prompts, **kw)


def test_float16_head_logits_within_the_weight_rounding(packed_a8):
    """head_dtype float16: the graphs share one half-precision copy of the head weight; logits differ from
    the float32 head by the rounding only (under 1% of their range), and greedy decoding runs as usual."""
    net, lm = packed_a8
    half = CachedLM(net, head_dtype="float16")
    assert half.decode_steps == lm.decode_steps and half.head_dtype == "float16"
    weight = half.step_graph.head_kernel.weight
    assert weight.dtype == ms.float16 and half.multi_step_graph.model_kernel.head_weight is weight
    ids = np.array([PROMPTS[1] + [0] * 5], np.int32)
    full, _, _ = lm.prefill(ids, np.array([11], np.int32))
    rounded, _, _ = half.prefill(ids, np.array([11], np.int32))
    assert 0 < np.abs(rounded - full).max() < 1e-2 * np.abs(full).max()
    out = generate(half, PROMPTS, max_new_tokens=10)
    assert out.stats.decode_calls == -(-9 // half.decode_steps) and all(len(t) == 10 for t in out.tokens)
    with pytest.raises(GenerationError, match="head_dtype must be float32 or float16"):
        CachedLM(net, head_dtype="bfloat16")


def test_float16_kv_cache_within_the_cache_rounding(packed_a8, fake_quant):
    """kv_dtype float16 (llama.cpp's default cache type): float16 caches through prefill, the one-step
    and the multi-step graphs; every step's logits within the rounding of the stored keys and values
    (packed, and fake-quant through the DecodeAttention op); K steps in one call still equal K one-step
    calls, tokens and caches bit for bit (the op and numpy round the same way)."""
    net, lm = packed_a8
    half = CachedLM(net, kv_dtype="float16")
    half.prefill_graph = lm.prefill_graph                  # the prefill graph does not see the cache
    cache = half.new_cache(2, 64)
    assert half.kv_dtype == "float16" and cache.dtype == "float16"
    assert all(a.dtype == np.float16 for a in cache.keys + cache.values)
    assert cache.nbytes == lm.new_cache(2, 64).nbytes // 2
    check_every_step(net, Recording(half), PROMPTS, tol=1e-4)
    caches = _check_multi_step_equals_single_steps(half)
    assert all(a.dtype == np.float16 for c in caches for a in c.keys + c.values)
    fq_net, fq_lm = fake_quant
    fq_half = CachedLM(fq_net, kv_dtype="float16")
    fq_half.prefill_graph = fq_lm.prefill_graph
    check_every_step(fq_net, fq_half, PROMPTS[:2], max_new_tokens=6, tol=1e-4)
    with pytest.raises(GenerationError, match="kv_dtype float16 needs the C\\+\\+ decode ops"):
        CachedLM(fq_net, fused_attention=False, kv_dtype="float16")
    with pytest.raises(GenerationError, match="kv_dtype must be float32 or float16"):
        CachedLM(fq_net, kv_dtype="bfloat16")


def test_fused_prefill_equals_the_prefill_graph(packed_a8, fake_quant):
    """A packed model's prompt pass runs as one PrefillModel op by default (valid tokens only, the cache
    written by the op): its logits and cache slots equal the MindSpore PrefillGraph's plus the host
    write, and the slots past each prompt stay untouched. A model that does not qualify is refused."""
    net, lm = packed_a8
    assert lm.prefill_model_graph is not None
    lengths = np.array([len(p) for p in PROMPTS], np.int32)
    ids = np.zeros((3, 16), np.int32)
    for b, p in enumerate(PROMPTS):
        ids[b, :len(p)] = p
    fused_cache, graph_cache = lm.new_cache(3, 64), lm.new_cache(3, 64)
    fused = lm.prefill_into(ids, lengths, fused_cache)
    logits, keys, values = lm.prefill(ids, lengths)
    graph_cache.write_prompt(keys, values)
    np.testing.assert_allclose(fused, logits, rtol=1e-5, atol=1e-5 * np.abs(logits).max())
    for a, b in zip(fused_cache.keys + fused_cache.values, graph_cache.keys + graph_cache.values):
        for row, n in enumerate(lengths):
            np.testing.assert_allclose(a[row, :, :n], b[row, :, :n], rtol=1e-5, atol=1e-5)
            assert not a[row, :, n:].any()                     # the graph path wrote padding there
    assert CachedLM(net, fused_prefill=False, decode_steps=1).prefill_model_graph is None
    fq_net, fq_lm = fake_quant
    assert fq_lm.prefill_model_graph is None
    with pytest.raises(GenerationError, match="fused_prefill: .*PrefillModel"):
        CachedLM(fq_net, fused_prefill=True)
