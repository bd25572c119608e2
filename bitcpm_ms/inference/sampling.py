"""Sampling: the generation settings and the logits filters, in plain numpy.

Argument names follow MindFormers' `GenerationMixin.generate` / `GenerationConfig` (`max_new_tokens`,
`do_sample`, `temperature`, `top_k`, `top_p`, `repetition_penalty`, `seed`, `eos_token_id`,
`pad_token_id`) plus `stop_strings` (Hugging Face's name). Filters run in the order Hugging Face and
MindFormers use: repetition penalty -> temperature -> top-k -> top-p -> draw. Each filter is a small
function on a logits vector so that it can be tested against a brute-force reference.

Semantics that differ between libraries, chosen here and tested:
  * temperature 0 (or do_sample=False) is greedy decoding (argmax after the repetition penalty);
  * top-k keeps every token whose logit is >= the k-th largest (ties at the boundary are kept);
  * top-p keeps the smallest set of most probable tokens whose probabilities add up to >= top_p,
    i.e. the token that crosses top_p is kept (the nucleus definition, and the one MindFormers'
    docstring states; MindFormers 1.9's code drops that token);
  * repetition penalty (CTRL / Hugging Face): a logit of a token already in the prompt or the output
    is divided by the penalty when positive and multiplied by it when negative;
  * the random draw of each prompt uses its own generator seeded with `seed`, so a prompt gives
    the same text alone or in any batch.
"""
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BitCPMError


class GenerationError(BitCPMError):
    """A generation request that cannot be served (empty prompt, too long, bad sampling value)."""


@dataclass
class GenerationConfig:
    max_new_tokens: int = 32
    do_sample: Optional[bool] = None      # None: sample iff temperature > 0
    temperature: float = 0.0
    top_k: int = 0                         # 0: off
    top_p: float = 1.0                     # 1.0: off
    repetition_penalty: float = 1.0        # 1.0: off
    seed: Optional[int] = None             # None: a fresh seed, reported in the result
    eos_token_id: Union[int, Sequence[int], None] = None    # one id or several (any of them ends a row)
    pad_token_id: int = 0
    stop_strings: Tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        self.stop_strings = tuple(self.stop_strings or ())
        self.validate()

    @property
    def eos_token_ids(self) -> Tuple[int, ...]:
        """The stop ids as a tuple (MiniCPM4 chat models stop at </s> and <|im_end|>)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, (int, np.integer)):
            return (int(self.eos_token_id),)
        return tuple(int(i) for i in self.eos_token_id)

    @property
    def greedy(self) -> bool:
        return self.do_sample is False or self.temperature == 0

    def validate(self) -> "GenerationConfig":
        if not isinstance(self.max_new_tokens, (int, np.integer)) or self.max_new_tokens < 1:
            raise GenerationError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if not np.isfinite(self.temperature) or self.temperature < 0:
            raise GenerationError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if self.do_sample and self.temperature == 0:
            raise GenerationError("do_sample=True needs a temperature > 0")
        if not isinstance(self.top_k, (int, np.integer)) or self.top_k < 0:
            raise GenerationError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        if not (0.0 < self.top_p <= 1.0):
            raise GenerationError(f"top_p must be in (0, 1], got {self.top_p}")
        if not np.isfinite(self.repetition_penalty) or self.repetition_penalty <= 0:
            raise GenerationError(f"repetition_penalty must be > 0 (1 = off), got {self.repetition_penalty}")
        if self.seed is not None and (not isinstance(self.seed, (int, np.integer)) or self.seed < 0):
            raise GenerationError(f"seed must be an integer >= 0, got {self.seed!r}")
        eos = self.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, (int, np.integer)) else eos
        if not isinstance(eos, (list, tuple)) or \
                any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0 for i in eos):
            raise GenerationError(f"eos_token_id must be an id >= 0 or a list of them, got {self.eos_token_id!r}")
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise GenerationError(f"stop strings must be non-empty strings, got {self.stop_strings!r}")
        return self


def apply_repetition_penalty(logits: np.ndarray, seen_ids, penalty: float) -> np.ndarray:
    """logits [V]; every id in seen_ids: l / penalty if l > 0 else l * penalty."""
    out = np.array(logits, np.float32, copy=True)
    if penalty == 1.0 or len(seen_ids) == 0:
        return out
    ids = np.unique(np.asarray(seen_ids, np.int64))
    picked = out[ids]
    out[ids] = np.where(picked > 0, picked / penalty, picked * penalty)
    return out


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    if temperature <= 0:
        raise GenerationError(f"temperature must be > 0 to scale logits, got {temperature}")
    return np.asarray(logits, np.float32) / np.float32(temperature)


def top_k_mask(logits: np.ndarray, k: int) -> np.ndarray:
    """Boolean keep-mask [V]: logits >= the k-th largest (all True when k is 0 or >= V)."""
    logits = np.asarray(logits)
    if k <= 0 or k >= logits.shape[-1]:
        return np.ones(logits.shape, bool)
    kth = np.partition(logits, -k)[-k]
    return logits >= kth


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    finite = np.isfinite(z)
    e = np.where(finite, np.exp(z - np.max(z[finite])), 0.0)
    return e / e.sum()


def top_p_mask(logits: np.ndarray, p: float) -> np.ndarray:
    """Boolean keep-mask [V]: the smallest set of most probable tokens with total probability >= p
    (masked-out logits, -inf, have probability 0). Ties are broken by token id (stable sort)."""
    if p >= 1.0:
        return np.ones(np.shape(logits), bool)
    probs = softmax(logits)
    order = np.argsort(-probs, kind="stable")
    cum = np.cumsum(probs[order])
    n_keep = int(np.searchsorted(cum, p - 1e-12)) + 1     # first index where cum >= p, inclusive
    keep = np.zeros(probs.shape, bool)
    keep[order[:min(n_keep, len(order))]] = True
    return keep


def filtered_logits(logits: np.ndarray, seen_ids, cfg: GenerationConfig) -> np.ndarray:
    """The logits the draw uses: penalty, temperature, then top-k and top-p masks (-inf outside)."""
    out = apply_repetition_penalty(logits, seen_ids, cfg.repetition_penalty)
    if cfg.greedy:
        return out
    out = apply_temperature(out, cfg.temperature)
    out = np.where(top_k_mask(out, cfg.top_k), out, -np.inf).astype(np.float32)
    return np.where(top_p_mask(out, cfg.top_p), out, -np.inf).astype(np.float32)


def next_token(logits: np.ndarray, seen_ids, cfg: GenerationConfig, rng: np.random.Generator) -> int:
    """One token from logits [V]: argmax when greedy, else a draw from the filtered distribution
    (inverse CDF with one uniform number of `rng`, so a seed fixes the choice)."""
    z = filtered_logits(logits, seen_ids, cfg)
    if cfg.greedy:
        return int(np.argmax(z))
    probs = softmax(z)
    cdf = np.cumsum(probs)
    i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))   # first i with cdf[i] > u: probs[i] > 0
    return i if i < len(cdf) else int(np.flatnonzero(probs)[-1])          # u rounded up to the total
