"""Held-out evaluation of a causal LM on packed data: loss, perplexity, bits per byte.

Definitions (``evaluate_lm``):

* every sample holds ``seq_length + 1`` ids; the model predicts ids 1..seq_length from their
  prefixes, so a batch contributes ``batch * seq_length`` predicted tokens (fewer only if a
  token equals the model's ``pad_token_id``, which packed data never contains). A network that
  masks documents (``use_eod_attn_mask_compression``) gets each batch's ``actual_seq_len`` and
  predicts only labels inside a document: a document's first token, whose prediction would read
  the previous document, is not counted (data/documents.py ``crossing_labels``);
* ``loss`` = mean negative log-likelihood per predicted token, in nats
  (``total_nll_nats / tokens``), where ``total_nll_nats`` = sum over batches of the model's mean
  batch loss times the batch's predicted-token count;
* ``perplexity`` = ``exp(loss)``; ``bits_per_token`` = ``loss / ln 2``;
* ``bits_per_byte`` = ``total_nll_nats / ln(2) / n_bytes``, ``n_bytes`` being the UTF-8 size of
  the original (cleaned) text those tokens encode. Pass it exactly, or pass
  ``bytes_per_token`` (the manifest's ``splits.validation.bytes_per_token``: text bytes / tokens
  of the split, EOS included) and ``n_bytes = tokens * bytes_per_token`` is used.
  Tokenizer-independent: compare models with different vocabularies on bits per byte.

The forward pass runs in whatever mode the MindSpore context is in (GRAPH_MODE for the
runner), with ``set_train(True)`` so that a MindFormers ``*ForCausalLM`` returns its loss, and
without any gradient computation (no ``GradOperation``/``value_and_grad`` wraps the call).
"""
from __future__ import annotations

import math
import os
import time
from typing import Optional

import numpy as np
import mindspore as ms

from ..data.documents import check_actual_seq_len, crossing_labels, eos_ids
from ..fileio import atomic_json
from ..data.dataset import build_dataset
from ..data.manifest import read_manifest

LN2 = math.log(2.0)


def _np(x):
    return None if x is None else np.asarray(x.asnumpy() if hasattr(x, "asnumpy") else x)


def _batches(dataset):
    """Yield numpy (``input_ids``, ``actual_seq_len`` or None) batches from a MindSpore dataset
    (its columns in that order) or an iterable (arrays, tuples, or dicts by column name)."""
    if hasattr(dataset, "create_tuple_iterator"):
        for cols in dataset.create_tuple_iterator(num_epochs=1, output_numpy=True):
            yield np.asarray(cols[0]), (np.asarray(cols[1]) if len(cols) > 1 else None)
        return
    for item in dataset:
        ends = None
        if isinstance(item, dict):
            item, ends = item["input_ids"], item.get("actual_seq_len")
        elif isinstance(item, (tuple, list)) and len(item) and not np.isscalar(item[0]) \
                and np.asarray(_np(item[0])).ndim == 2:
            item, ends = item[0], (item[1] if len(item) > 1 else None)
        yield _np(item), _np(ends)


def metrics_from_totals(total_nll_nats: float, tokens: int, n_bytes: Optional[float] = None) -> dict:
    """Loss / perplexity / bits per token / bits per byte from summed NLL (pure arithmetic)."""
    if tokens <= 0:
        raise ValueError("no tokens evaluated")
    loss = total_nll_nats / tokens
    return {
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else float("inf"),
        "bits_per_token": loss / LN2,
        "bits_per_byte": (total_nll_nats / LN2 / n_bytes) if n_bytes else None,
        "tokens": int(tokens),
        "n_bytes": float(n_bytes) if n_bytes else None,
        "total_nll_nats": float(total_nll_nats),
    }


def evaluate_lm(network, dataset, n_bytes: Optional[float] = None, max_batches: Optional[int] = None,
                bytes_per_token: Optional[float] = None, pad_token_id: Optional[int] = None) -> dict:
    """Evaluate ``network`` (a causal LM returning the mean loss for ``input_ids`` of length
    ``seq_length + 1`` in training mode) on ``dataset`` (batches ``[B, seq_length + 1]``).

    Returns ``{"loss", "perplexity", "bits_per_token", "bits_per_byte", "tokens", "n_bytes",
    "total_nll_nats", "batches", "samples", "seconds", "tokens_per_s"}``; ``bits_per_byte`` is
    None when neither ``n_bytes`` nor ``bytes_per_token`` is given. See module docstring."""

    if pad_token_id is None:
        pad_token_id = getattr(network, "pad_token_id", None)
    documents = bool(getattr(network, "document_mask", False))
    eos = eos_ids(network.config) if documents else ()
    was_training = bool(getattr(network, "training", False))
    network.set_train(True)
    total_nll, tokens, batches, samples = 0.0, 0, 0, 0
    t0 = time.time()
    try:
        for ids, ends in _batches(dataset):
            if max_batches is not None and batches >= max_batches:
                break
            if ids.ndim != 2 or ids.shape[1] < 2:
                raise ValueError(f"expected input_ids batches [batch, seq_length + 1], got {ids.shape}")
            ids = ids.astype(np.int32, copy=False)
            keep = np.ones((ids.shape[0], ids.shape[1] - 1), bool)
            if documents:
                if ends is None:
                    raise ValueError("the network masks documents (use_eod_attn_mask_compression): the "
                                     "evaluation batches need their actual_seq_len column")
                ends = check_actual_seq_len(ends, ids.shape[1] - 1, "evaluation actual_seq_len")
                keep = ~crossing_labels(ends, ids[:, :-1], eos)
                loss = network(ms.Tensor(ids, ms.int32), actual_seq_len=ms.Tensor(ends.astype(np.int32)))
            else:
                loss = network(ms.Tensor(ids, ms.int32))
            if isinstance(loss, (tuple, list)):
                loss = loss[0]
            loss = float(loss.asnumpy()) if hasattr(loss, "asnumpy") else float(loss)
            if pad_token_id is not None:
                keep &= ids[:, :-1] != pad_token_id
            n = int(np.count_nonzero(keep))
            if not math.isfinite(loss):
                raise FloatingPointError(f"non-finite loss {loss} in evaluation batch {batches}")
            total_nll += loss * n
            tokens += n
            batches += 1
            samples += ids.shape[0]
    finally:
        network.set_train(was_training)
    if tokens == 0:
        raise ValueError("evaluation dataset yielded no batches")
    if n_bytes is None and bytes_per_token:
        n_bytes = tokens * bytes_per_token
    seconds = time.time() - t0
    out = metrics_from_totals(total_nll, tokens, n_bytes)
    out.update({"batches": batches, "samples": samples, "seconds": round(seconds, 3),
                "tokens_per_s": tokens / seconds if seconds > 0 else None})
    return out


def evaluate_on_prepared(network, dataset_dir: str, batch_size: int, max_batches: Optional[int] = None,
                         split: str = "validation") -> dict:
    """Convenience for the runner: build the held-out split of a prepared dataset (no shuffle,
    every sample once, remainder batch dropped) and evaluate with the manifest's bytes/token."""
    man = read_manifest(dataset_dir)
    ds = build_dataset(dataset_dir, batch_size, split=split, shuffle=False, rank_id=0, device_num=1,
                       documents=bool(getattr(network, "document_mask", False)))
    out = evaluate_lm(network, ds, max_batches=max_batches,
                      bytes_per_token=man["splits"][split]["bytes_per_token"])
    out.update({"split": split, "dataset": os.path.abspath(dataset_dir),
                "dataset_fingerprint": man["fingerprint"]})
    return out


def write_eval_json(metrics: dict, output_dir: str, filename: str = "eval.json") -> str:
    """Write ``metrics`` to ``output_dir/eval.json`` atomically (temp file + os.replace)."""
    os.makedirs(output_dir, exist_ok=True)
    return atomic_json(metrics, os.path.join(output_dir, filename))
