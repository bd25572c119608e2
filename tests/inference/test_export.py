"""The prefill and decode-step graphs exported to MindIR, reloaded with mindspore.load / nn.GraphCell,
generate exactly the in-process model's tokens (packed W1.58A8 model: the AOT kernel op inside)."""
import os

import pytest

from bitcpm_ms.inference import CachedLM, GenerationError, export_decode_graphs, generate, load_decode_graphs

from .conftest import PROMPTS


def test_reloaded_graphs_generate_the_same_tokens(packed_a8, tmp_path):
    _, lm = packed_a8
    meta = export_decode_graphs(lm, str(tmp_path / "decode"), batch_size=3, prompt_length=16, cache_length=48)
    assert sorted(os.listdir(tmp_path / "decode")) == ["decode_graphs.json", "decode_step.mindir", "prefill.mindir"]
    assert meta["num_layers"] == 2 and meta["cache_length"] == 48
    graphs = load_decode_graphs(str(tmp_path / "decode"))
    ref = generate(lm, PROMPTS, max_new_tokens=12)
    assert generate(graphs, PROMPTS, max_new_tokens=12).tokens == ref.tokens            # greedy
    assert generate(graphs, PROMPTS[1:2], max_new_tokens=12).tokens == ref.tokens[1:2]  # batch padded 1 -> 3
    kw = dict(max_new_tokens=12, temperature=0.8, top_p=0.9, seed=5)
    assert generate(graphs, PROMPTS, **kw).tokens == generate(lm, PROMPTS, **kw).tokens

    with pytest.raises(GenerationError, match="exported for prompts of at most 16"):
        generate(graphs, [list(range(1, 18))], max_new_tokens=2)
    with pytest.raises(GenerationError, match="cache of 48"):
        generate(graphs, PROMPTS, max_new_tokens=40)
    with pytest.raises(GenerationError, match="exported for 3"):
        generate(graphs, PROMPTS * 2, max_new_tokens=2)
    with pytest.raises(GenerationError, match="exists"):
        export_decode_graphs(lm, str(tmp_path / "decode"), batch_size=3, prompt_length=16, cache_length=48)
    with pytest.raises(GenerationError, match="no exported decoding graphs"):
        load_decode_graphs(str(tmp_path))


def test_float16_kv_cache_graphs_reload_with_their_cache_dtype(packed_a8, tmp_path):
    """A CachedLM with float16 caches exports its step graph for float16 cache inputs and records the
    dtype; the reloaded graphs make float16 caches and the in-process model's tokens."""
    net, lm = packed_a8
    half = CachedLM(net, kv_dtype="float16")
    meta = export_decode_graphs(half, str(tmp_path / "decode"), batch_size=3, prompt_length=16, cache_length=48)
    graphs = load_decode_graphs(str(tmp_path / "decode"))
    assert meta["kv_dtype"] == graphs.kv_dtype == "float16" and graphs.new_cache(3, 48).dtype == "float16"
    assert generate(graphs, PROMPTS, max_new_tokens=12).tokens == generate(half, PROMPTS, max_new_tokens=12).tokens
