"""Sampling filters against brute-force references on fixed logits, draws, and the settings' checks."""
import numpy as np
import pytest

from bitcpm_ms.errors import BitCPMError
from bitcpm_ms.inference import (GenerationConfig, GenerationError, apply_repetition_penalty, apply_temperature,
                                 filtered_logits, next_token, softmax, top_k_mask, top_p_mask)

LOGITS = np.array([2.0, -1.0, 0.5, 3.0, 0.5, -4.0, 1.0, 0.0], np.float32)


def ref_top_k(logits, k):
    """Keep a token iff fewer than k tokens have a strictly larger logit."""
    if k == 0:
        return np.ones(len(logits), bool)
    return np.array([sum(o > l for o in logits) < k for l in logits])


def ref_top_p(logits, p):
    """The smallest subset (by size, then by a most-probable-first order) whose probability is >= p."""
    probs = np.exp(logits - logits.max())
    probs = probs / probs.sum()
    order = sorted(range(len(logits)), key=lambda i: (-probs[i], i))
    for n in range(1, len(logits) + 1):
        if probs[order[:n]].sum() >= p - 1e-12:
            keep = np.zeros(len(logits), bool)
            keep[order[:n]] = True
            return keep
    return np.ones(len(logits), bool)


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4, 7, 8, 20])
def test_top_k_matches_reference(k):
    assert np.array_equal(top_k_mask(LOGITS, k), ref_top_k(LOGITS, k))


def test_top_k_keeps_ties_at_the_boundary():
    # the two 0.5 logits tie for 4th place: both are kept (Hugging Face semantics)
    assert top_k_mask(LOGITS, 4).sum() == 5


@pytest.mark.parametrize("p", [0.05, 0.3, 0.5, 0.62, 0.7, 0.9, 0.99, 1.0])
def test_top_p_matches_reference(p):
    assert np.array_equal(top_p_mask(LOGITS, p), ref_top_p(LOGITS, p))


def test_top_p_keeps_the_token_that_crosses_p():
    logits = np.log(np.array([0.6, 0.3, 0.1], np.float32))
    assert top_p_mask(logits, 0.7).tolist() == [True, True, False]   # 0.6 < 0.7: the 0.3 token is needed
    assert top_p_mask(logits, 0.6).tolist() == [True, False, False]


def test_temperature_and_repetition_penalty():
    np.testing.assert_allclose(apply_temperature(LOGITS, 0.5), LOGITS * 2)
    with pytest.raises(GenerationError):
        apply_temperature(LOGITS, 0.0)
    out = apply_repetition_penalty(LOGITS, [0, 1, 1, 5], 2.0)
    expect = LOGITS.copy()
    expect[0], expect[1], expect[5] = 1.0, -2.0, -8.0       # positive / 2, negative * 2, each id once
    np.testing.assert_allclose(out, expect)
    np.testing.assert_array_equal(apply_repetition_penalty(LOGITS, [], 2.0), LOGITS)


def test_filtered_logits_order_penalty_temperature_top_k_top_p():
    cfg = GenerationConfig(temperature=0.5, top_k=4, top_p=0.8, repetition_penalty=1.5)
    z = LOGITS.copy()
    z[3] = z[3] / 1.5                                   # token 3 was seen
    z = z / 0.5
    z = np.where(ref_top_k(z, 4), z, -np.inf)
    z = np.where(ref_top_p(z, 0.8), z, -np.inf)
    np.testing.assert_allclose(filtered_logits(LOGITS, [3], cfg), z)


def test_greedy_is_argmax_after_the_penalty():
    rng = np.random.default_rng(0)
    assert next_token(LOGITS, [], GenerationConfig(), rng) == 3
    assert next_token(LOGITS, [3], GenerationConfig(repetition_penalty=2.0), rng) == 0   # 3 -> 1.5 < 2.0
    assert next_token(LOGITS, [], GenerationConfig(temperature=0.9, do_sample=False), rng) == 3


def test_draws_follow_the_filtered_distribution_and_the_seed():
    cfg = GenerationConfig(temperature=0.8, top_k=5, top_p=0.9)
    draws = [next_token(LOGITS, [], cfg, np.random.default_rng(s)) for s in range(4000)]
    probs = softmax(filtered_logits(LOGITS, [], cfg))
    counts = np.bincount(draws, minlength=len(LOGITS)) / len(draws)
    assert set(np.flatnonzero(counts)) <= set(np.flatnonzero(probs))     # never a filtered token
    np.testing.assert_allclose(counts, probs, atol=0.03)
    seeded = [[next_token(LOGITS, [], cfg, rng) for _ in range(20)] for rng in
              (np.random.default_rng(7), np.random.default_rng(7))]
    assert seeded[0] == seeded[1]


@pytest.mark.parametrize("bad, match", [
    (dict(temperature=-0.1), "temperature"), (dict(temperature=float("nan")), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_k=-1), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(seed=-3), "seed"), (dict(stop_strings=[""]), "stop"), (dict(do_sample=True), "do_sample"),
])
def test_bad_settings_are_named_errors(bad, match):
    with pytest.raises(GenerationError, match=match) as info:
        GenerationConfig(**bad)
    assert isinstance(info.value, BitCPMError)
