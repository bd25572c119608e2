"""``PrepareConfig``: everything that determines a prepared dataset, and the ``data:`` section of a
MindFormers-style YAML that fills it.

    data:
      input: gcide                 # files / dirs / globs, or "gcide" (Debian dict-gcide)
      format: auto                 # auto | text | jsonl | parquet | dictd
      text_field: text             # JSONL / Parquet
      doc_separator: "\\n\\n"        # plain text: blank line(s); "" = whole file is one document
      cleaner: auto                # auto (gcide for the GCIDE dictionary) | none | gcide
      output_dir: null             # null: data_cache/<name>_v<vocab_size>_s<seq_length>
      validation_fraction: 0.01    # share of documents held out (by document hash)
      seed: 1234                   # shuffle seed (train shards)
      shuffle: true
      shard_samples: 8192          # samples per MindRecord file
      eod_pad_length: 128          # width of the actual_seq_len column (most documents per sample)
      num_workers: 2               # tokenizer processes (0: in-process)
      tokenizer:
        model_file: null           # existing SentencePiece .model, else train one
        type: bpe
        vocab_size: 8192
        sample_bytes: 16000000     # training sample size cap

``seq_length`` comes from ``data.seq_length`` if set, else ``model.model_config.seq_length``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import List, Optional, Union

from .documents import DEFAULT_EOD_PAD_LENGTH
from .errors import DataError
import yaml


@dataclass
class PrepareConfig:
    """Everything that determines a prepared dataset (see docs/data.md, YAML section ``data:``)."""
    input: Union[str, List[str]] = "gcide"       # path(s)/dir(s)/glob(s) or "gcide"
    format: str = "auto"                           # auto | text | jsonl | parquet | dictd
    text_field: str = "text"                       # jsonl / parquet
    doc_separator: Optional[str] = "\n\n"          # text: "\n\n" = blank line(s); None = whole file
    cleaner: str = "auto"                          # auto | none | gcide
    output_dir: Optional[str] = None               # default data_cache/<name>_v<vocab>_s<seq>
    name: Optional[str] = None                     # default: "gcide" or the first input's stem
    seq_length: int = 256                          # samples hold seq_length + 1 ids
    validation_fraction: float = 0.01
    seed: int = 1234
    shuffle: bool = True
    shard_samples: int = 8192
    eod_pad_length: int = DEFAULT_EOD_PAD_LENGTH    # width of the actual_seq_len column
    num_workers: int = 2                           # 0: tokenize in the main process
    task_chars: int = 1 << 18
    tokenizer_model: Optional[str] = None          # an existing SentencePiece .model
    vocab_size: int = 8192
    tokenizer_type: str = "bpe"
    tokenizer_sample_bytes: int = 16_000_000
    progress: bool = True

    # keys that do not change the output
    _NON_OUTPUT = ("output_dir", "num_workers", "progress", "name", "task_chars")

    def fingerprint_fields(self) -> dict:
        d = asdict(self)
        for k in self._NON_OUTPUT:
            d.pop(k, None)
        d.pop("input")
        if self.tokenizer_model:
            for k in ("vocab_size", "tokenizer_type", "tokenizer_sample_bytes"):
                d.pop(k)
            d["tokenizer_model"] = None      # replaced by its sha256 below
        return d

_FLAT = {"input", "format", "text_field", "doc_separator", "cleaner", "output_dir", "name",
         "seq_length", "validation_fraction", "seed", "shuffle", "shard_samples", "eod_pad_length", "num_workers",
         "task_chars", "progress"}
_TOK = {"model_file": "tokenizer_model", "type": "tokenizer_type", "vocab_size": "vocab_size",
        "sample_bytes": "tokenizer_sample_bytes"}


def config_from_dict(cfg: Optional[dict], overrides: Optional[dict] = None) -> PrepareConfig:
    cfg = dict(cfg or {})
    data = dict(cfg.get("data") or {})
    kw = {}
    for k, v in data.items():
        if k == "tokenizer":
            for tk, tv in (v or {}).items():
                if tk not in _TOK:
                    raise DataError(f"unknown key data.tokenizer.{tk} (known: {sorted(_TOK)})")
                kw[_TOK[tk]] = tv
        elif k in _FLAT:
            kw[k] = v
        else:
            raise DataError(f"unknown key data.{k} (known: {sorted(_FLAT | {'tokenizer'})})")
    if "seq_length" not in kw:
        seq = (((cfg.get("model") or {}).get("model_config") or {}).get("seq_length"))
        if seq is not None:
            kw["seq_length"] = int(seq)
    if kw.get("doc_separator") == "":
        kw["doc_separator"] = None
    kw.update(overrides or {})
    return PrepareConfig(**kw)


def config_from_yaml(path: Optional[str], overrides: Optional[dict] = None) -> PrepareConfig:
    if not path:
        return config_from_dict({}, overrides)
    try:
        with open(path, "r", encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    except OSError as exc:
        raise DataError(f"cannot read config {path!r}: {exc}") from exc
    return config_from_dict(cfg, overrides)
