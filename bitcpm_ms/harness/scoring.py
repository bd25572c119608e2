"""The arithmetic of lm-eval's log-likelihood requests, in numpy (no model, no MindSpore).

A request is (context ids, continuation ids). The model sees the last `max_length` tokens of
`context + continuation` without its final token, and the continuation is scored on the logits of
its own positions: log p(cont_i | everything before it), summed; `is_greedy` is whether every
continuation token is the argmax (lm-eval's HFLM does the same). Rows are right-padded to the
model's fixed window; causal attention keeps padding invisible to the positions that are read.
"""
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import ConfigError


def model_input(context: Sequence[int], continuation: Sequence[int], max_length: int) -> Tuple[List[int], int]:
    """(input ids, number of continuation tokens scored): the last max_length tokens of context +
    continuation, less the final token (it is predicted, never input)."""
    if not continuation:
        raise ConfigError("a log-likelihood request has an empty continuation (nothing to score)")
    if len(continuation) > max_length:
        raise ConfigError(f"a continuation of {len(continuation)} tokens is longer than max_length {max_length}; "
                          "raise max_length= in model_args")
    if not context:
        raise ConfigError("a log-likelihood request has no context token (lm-eval gives at least the prefix token)")
    whole = list(context) + list(continuation)
    return whole[-(max_length + 1):][:-1], len(continuation)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (the sum over a vocabulary of 73K float32 terms loses digits)."""
    x = np.asarray(logits, np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def score_row(logits: np.ndarray, n_input: int, continuation: Sequence[int]) -> Tuple[float, bool]:
    """(sum of log-probabilities, is_greedy) of `continuation` from one row's logits [T, V], whose first
    n_input positions are the real input (the continuation's tokens are predicted at the last len(cont))."""
    cont = np.asarray(continuation, np.int64)
    span = logits[n_input - len(cont):n_input]                                  # [len(cont), V]
    logp = log_softmax(span)
    return float(logp[np.arange(len(cont)), cont].sum()), bool((span.argmax(-1) == cont).all())


def pad_rows(rows: Sequence[Sequence[int]], length: int, batch_size: int, pad_id: int) -> np.ndarray:
    """[batch_size, length] int32: rows right-padded with pad_id; missing rows repeat the last one, so
    every call has one shape (a MindSpore graph compiles once per shape)."""
    if not rows or len(rows) > batch_size:
        raise ValueError(f"need 1..{batch_size} rows, got {len(rows)}")
    out = np.full((batch_size, length), pad_id, np.int32)
    for i in range(batch_size):
        row = rows[min(i, len(rows) - 1)]
        out[i, :len(row)] = row
    return out


def rolling_requests(tokens: Sequence[int], prefix_id: int, max_length: int) -> List[Tuple[List[int], List[int]]]:
    """lm-eval's rolling windows (each token predicted once, each window with as much context as fits),
    as disjoint (context, continuation) pairs for `model_input`."""
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    return [make_disjoint_window(w) for w in
            get_rolling_token_windows(list(tokens), prefix_token=prefix_id, max_seq_len=max_length, context_len=1)]
