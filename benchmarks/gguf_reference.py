"""Our side of a GGUF-vs-llama.cpp comparison (shared by tests/app/test_llamacpp.py and the benchmarks).

* `held_out_texts(dataset_dir, n)`: documents of the prepared dataset's validation split, as text
  (the same corpus, cleaner and document hash as `prepare_dataset`, so never trained on).
* `OurModel(config, checkpoint)`: the trained model in MindSpore (fake-quant, exactly what we
  evaluate), `logits(ids)` for one sequence, padded to the compiled seq_length (causal: padding
  is invisible to the positions read).
* `compare_logits(ours, theirs)`: max |difference| relative to the largest |logit| of the
  sequence, and the share of positions whose argmax agrees.
* `perplexity_same_way(model, ids, n_ctx)`: our perplexity scored exactly as llama-perplexity
  scores (chunks of n_ctx ids, second half of each chunk; `llamacpp.chunked_nll`).
"""
from __future__ import annotations

import json
import math
import os

import numpy as np

from benchmarks import llamacpp


def held_out_texts(dataset_dir: str, n: int, min_chars: int = 200, max_chars: int = 700) -> list:
    """The first `n` validation documents with min_chars..max_chars characters (after cleaning)."""
    from bitcpm_ms.data.readers import ReadStats, iter_documents
    from bitcpm_ms.data.tasks import cleaner_fn, is_validation
    with open(os.path.join(dataset_dir, "manifest.json"), encoding="utf-8") as f:
        man = json.load(f)
    cfg = man["config"]
    files = [s["path"] for s in man["sources"]]
    fmt = cfg["format"]
    cleaner = cfg["cleaner"]
    if cleaner == "auto":
        cleaner = "gcide" if all(os.path.basename(p).startswith("gcide") for p in files) else "none"
    clean = cleaner_fn(cleaner if cleaner != "none" else None)
    out = []
    for raw in iter_documents(files, fmt, cfg["text_field"], cfg["doc_separator"], stats=ReadStats()):
        if not is_validation(raw, cfg["validation_fraction"]):
            continue
        text = clean(raw) if clean else raw
        if text and min_chars <= len(text) <= max_chars:
            out.append(text)
            if len(out) == n:
                return out
    raise ValueError(f"only {len(out)} held-out documents of {min_chars}-{max_chars} characters in {dataset_dir}")


class OurModel:
    """The configured model with a checkpoint's weights, for logits of single sequences."""

    def __init__(self, config, checkpoint: str):
        import mindspore as ms
        from bitcpm_ms.app.artifacts import load_model
        self.ms = ms
        config.model.model_config.batch_size = 1
        self.seq_length = int(config.model.model_config.seq_length)
        self.net, self.checkpoint = load_model(config, checkpoint)
        self.net.set_train(False)

    def logits(self, ids) -> np.ndarray:
        """float32 [len(ids), vocab] for one sequence of at most seq_length ids."""
        ids = np.asarray(ids, np.int32)
        if not 0 < len(ids) <= self.seq_length:
            raise ValueError(f"{len(ids)} ids; the model takes 1..{self.seq_length}")
        buf = np.zeros((1, self.seq_length), np.int32)
        buf[0, :len(ids)] = ids
        out = self.net(self.ms.Tensor(buf))[0].asnumpy()
        return out.reshape(self.seq_length, -1)[:len(ids)].astype(np.float32)


def compare_logits(ours: np.ndarray, theirs: np.ndarray) -> dict:
    """Max |diff| (absolute, and relative to our largest |logit|), top-1 agreement, and for the
    positions where the top-1 differs, our own margin between the two tokens (a near-tie when it
    is within the logit difference)."""
    if ours.shape != theirs.shape:
        raise ValueError(f"logits shapes differ: ours {ours.shape}, llama.cpp {theirs.shape}")
    diff = np.abs(ours.astype(np.float64) - theirs)
    a, b = ours.argmax(-1), theirs.argmax(-1)
    rows = np.nonzero(a != b)[0]
    margins = ours[rows, a[rows]] - ours[rows, b[rows]]
    return {"max_abs_diff": float(diff.max()), "max_rel_diff": float(diff.max() / np.abs(ours).max()),
            "top1_agreement": float(np.mean(a == b)), "positions": int(len(ours)), "top1_flips": int(len(rows)),
            "max_flip_margin": float(margins.max()) if len(rows) else 0.0}


def perplexity_same_way(model: OurModel, ids, n_ctx: int) -> float:
    total, count = llamacpp.chunked_nll(ids, n_ctx, model.logits)
    return math.exp(total / count)
