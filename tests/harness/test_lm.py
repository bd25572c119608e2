"""The lm-eval model `bitcpm` against numpy: log-likelihoods from the model's own logits (through lm-eval's
evaluator, on a local multiple-choice task), rolling windows, stop strings, packed == fake-quant."""
import numpy as np
import mindspore as ms
import pytest
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.tasks import TaskManager

from bitcpm_ms.harness.lm import BitCPMLM, cut_at_stop
from bitcpm_ms.quant.convert import convert_model
from bitcpm_ms.testing import random_bitcpm

from .conftest import MODEL, QUANT


def reference_logprob(net, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) by hand: ids split as lm-eval splits them (the continuation is the tail
    of encode(context + continuation)), the last seq_length inputs, full-sequence logits, float64 softmax."""
    L = MODEL["seq_length"]
    prefix = tokenizer.eos_token_ids[0]
    spaces = len(context) - len(context.rstrip())        # lm-eval moves trailing spaces to the continuation
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    ctx = [prefix] + tokenizer.encode(context)
    cont = ([prefix] + tokenizer.encode(context + continuation))[len(ctx):]
    seq = (ctx + cont)[-(L + 1):]
    buf = np.zeros((1, L), np.int32)
    buf[0, :len(seq) - 1] = seq[:-1]
    logits = net(ms.Tensor(buf))[0].asnumpy().reshape(L, -1).astype(np.float64)
    total = 0.0
    for j, token in enumerate(seq[-len(cont):]):
        row = logits[len(seq) - 1 - len(cont) + j]
        total += row[token] - (row.max() + np.log(np.exp(row - row.max()).sum()))
    return total


def run_task(lm, include):
    return simple_evaluate(model=lm, tasks=["tiny_mc"], task_manager=TaskManager(include_path=str(include)),
                           log_samples=True, bootstrap_iters=0)


def test_loglikelihood_equals_numpy_logprobs_of_the_logits(fake_quant_lm, tokenizer, mc_task):
    include, docs = mc_task
    lm = fake_quant_lm
    ctx_ids = lm.tok_encode(docs[0]["question"])
    assert len(ctx_ids) == lm.max_length - 1                # the edge case: one token short of the window
    out = run_task(lm, include)
    samples = out["samples"]["tiny_mc"]
    assert len(samples) == len(docs)
    worst, truncated = 0.0, 0
    for s in samples:
        for (context, continuation), resp in zip(s["arguments"], s["resps"]):     # one request per choice
            ref = reference_logprob(lm.net, tokenizer, context, continuation)
            worst = max(worst, abs(resp[0][0] - ref) / max(1.0, abs(ref)))
            truncated += len(lm.tok_encode(context + continuation)) > lm.max_length + 1
    assert worst < 1e-5, worst
    assert truncated >= 2                                    # question 0's longer choices were cut on the left
    assert lm.calls == -(-sum(len(d["choices"]) for d in docs) // lm.batch_size)   # batches of batch_size


def test_rolling_loglikelihood_scores_every_token_once(fake_quant_lm, tokenizer):
    lm = fake_quant_lm
    text = " ".join(["the old man came to the water and the light was good"] * 6)
    ids = lm.tok_encode(text, add_special_tokens=False)
    assert len(ids) > 2 * lm.max_length                      # three windows or more
    got = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)[0]
    # by hand: token i predicted from at most max_length previous ids (the prefix id before the first)
    seq = [lm.prefix_token_id] + ids
    total, L = 0.0, lm.max_length
    for end in range(1, len(seq), L):                        # windows of L predictions, full context each
        lo = max(0, min(end + L, len(seq)) - 1 - L)
        window = seq[lo:min(end + L, len(seq))]
        buf = np.zeros((1, L), np.int32)
        buf[0, :len(window) - 1] = window[:-1]
        logits = lm.net(ms.Tensor(buf))[0].asnumpy().reshape(L, -1).astype(np.float64)
        for pos in range(end, min(end + L, len(seq))):
            row = logits[pos - 1 - lo]
            total += row[seq[pos]] - (row.max() + np.log(np.exp(row - row.max()).sum()))
    assert abs(got - total) / abs(total) < 1e-6


def test_generate_until_stops_at_the_first_until_string(fake_quant_lm):
    lm = fake_quant_lm

    def gen(until, context="the water was"):
        req = Instance("generate_until", {}, (context, {"until": until, "max_gen_toks": 16}), 0)
        return lm.generate_until([req], disable_tqdm=True)[0]

    free = gen([])
    assert len(free) >= 8, free
    stop = free[4:6]
    first = free.index(stop)
    got = gen([stop, "no such text"])
    assert got == free[:first] and stop not in got
    # two prompts in one batch: each is cut at its own first stop
    reqs = [Instance("generate_until", {}, (c, {"until": [stop], "max_gen_toks": 16}), i)
            for i, c in enumerate(["the water was", "a man"])]
    texts = lm.generate_until(reqs, disable_tqdm=True)
    assert texts[0] == got and stop not in texts[1]
    assert cut_at_stop("abcXYdefXY", ["def", "XY"]) == "abc" and cut_at_stop("abc", ["z"]) == "abc"


def test_packed_model_gives_the_fake_quant_choices(tokenizer, mc_task):
    include, docs = mc_task
    net = random_bitcpm(MODEL, QUANT, seed=7)
    fake = run_task(BitCPMLM.from_model(net, tokenizer, batch_size=4), include)["samples"]["tiny_mc"]
    convert_model(net)
    assert type(net.model.layers[0].attention.wq).__name__ == "PackedTernaryLinear"
    packed = run_task(BitCPMLM.from_model(net, tokenizer, batch_size=4), include)["samples"]["tiny_mc"]
    for a, b in zip(fake, packed):
        la, lb = np.array([r[0][0] for r in a["resps"]]), np.array([r[0][0] for r in b["resps"]])
        assert la.argmax() == lb.argmax()
        assert np.abs(la - lb).max() < 1e-3
