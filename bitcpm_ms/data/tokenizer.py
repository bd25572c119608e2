"""SentencePiece tokenizer: training on a streamed corpus sample, loading, MindFormers class.

Fixed special ids (all tokenizers trained here; checked when loading a foreign model only
if ``strict_special_ids``):

======  =====  ===========
id      piece  meaning
======  =====  ===========
0       <pad>  padding (never produced by encoding; packed data holds none)
1       <s>    BOS (not added by ``encode_document``)
2       </s>   EOS (appended after every document when packing)
3       <unk>  unknown (unused in practice: byte fallback covers every UTF-8 byte)
======  =====  ===========

Lossless settings: ``normalization_rule_name="identity"`` (no NFKC), ``add_dummy_prefix=False``,
``remove_extra_whitespaces=False``, ``byte_fallback=True`` (any character outside the vocabulary,
e.g. Chinese, becomes its UTF-8 bytes ``<0xE4>...``), ``split_digits=True``. With these
``decode(encode(text)) == text`` for every string (U+FFFD included). Special pieces are control
symbols: a literal ``"</s>"`` in the text is encoded as ordinary characters, never as EOS.
"""
from __future__ import annotations

import hashlib
import io
import os
from typing import Iterable, Iterator, List, Sequence

import sentencepiece as spm

from ..fileio import atomic_write
from .errors import DataError

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
PAD_PIECE, BOS_PIECE, EOS_PIECE, UNK_PIECE = "<pad>", "<s>", "</s>", "<unk>"
MAX_SENTENCE_BYTES = 1 << 16


def file_sha256(path: str, tick=None) -> str:
    """sha256 hex of a file; `tick()` after each 1 MiB block (see `parallel.once_per_node`)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if tick is not None:
                tick()
    return h.hexdigest()


def _sentences(docs: Iterable[str]) -> Iterator[str]:
    """SentencePiece trains on lines: feed the non-empty lines of each document (cut to
    MAX_SENTENCE_BYTES // 4 characters so no line is dropped for being too long)."""
    step = MAX_SENTENCE_BYTES // 4
    for doc in docs:
        for line in doc.split("\n"):
            for i in range(0, len(line), step):
                piece = line[i:i + step]
                if piece.strip():
                    yield piece


def train_tokenizer(documents: Iterable[str], model_path: str, vocab_size: int = 8192,
                    model_type: str = "bpe", max_sample_bytes: int = 16_000_000,
                    character_coverage: float = 0.9995, num_threads: int = 2,
                    seed_sentencepiece_size: int = 1_000_000) -> str:
    """Train a SentencePiece model on (a bounded prefix of) ``documents`` and write it to
    ``model_path`` atomically. Memory is bounded by ``max_sample_bytes`` of text (the caller
    streams a deterministic sample, see ``packing.tokenizer_sample``). Returns ``model_path``."""
    if model_type not in ("bpe", "unigram", "char", "word"):
        raise DataError(f"unknown tokenizer model_type {model_type!r}")
    if vocab_size < 260 + 4:
        raise DataError(f"vocab_size {vocab_size} too small: byte fallback alone needs 256 + 4 ids")
    taken = {"bytes": 0, "lines": 0}

    def bounded() -> Iterator[str]:
        for s in _sentences(documents):
            n = len(s.encode("utf-8"))
            if taken["bytes"] + n > max_sample_bytes and taken["lines"]:
                return
            taken["bytes"] += n
            taken["lines"] += 1
            yield s

    os.makedirs(os.path.dirname(os.path.abspath(model_path)) or ".", exist_ok=True)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=bounded(), model_writer=buf,
            model_type=model_type, vocab_size=vocab_size,
            character_coverage=character_coverage, byte_fallback=True,
            normalization_rule_name="identity", add_dummy_prefix=False,
            remove_extra_whitespaces=False, split_digits=True,
            allow_whitespace_only_pieces=True, split_by_whitespace=True,
            max_sentence_length=MAX_SENTENCE_BYTES, input_sentence_size=0,
            shuffle_input_sentence=False, num_threads=num_threads,
            seed_sentencepiece_size=seed_sentencepiece_size,
            pad_id=PAD_ID, bos_id=BOS_ID, eos_id=EOS_ID, unk_id=UNK_ID,
            pad_piece=PAD_PIECE, bos_piece=BOS_PIECE, eos_piece=EOS_PIECE, unk_piece=UNK_PIECE,
            hard_vocab_limit=False, minloglevel=2)
    except RuntimeError as exc:
        if taken["lines"] == 0:
            raise DataError("tokenizer training got no text (empty corpus sample)") from exc
        raise DataError(f"SentencePiece training failed on {taken['bytes']} bytes of sample text "
                        f"(vocab_size={vocab_size} may be too large for this corpus): {exc}") from exc
    with atomic_write(model_path, "wb") as f:
        f.write(buf.getvalue())
    return model_path


def check_vocab_size(actual: int, wanted: int, stats=None) -> None:
    """A trained vocabulary smaller than configured stops preparation, naming the likely cause.

    SentencePiece (``hard_vocab_limit=False``) silently returns fewer pieces when the sample has
    too few distinct strings, e.g. a latin-1 corpus, whose accented bytes all decode to U+FFFD
    (336 pieces instead of 8192 were seen); the model's vocab_size would then not match the data.
    ``stats`` (a ``readers.ReadStats`` of the sample) tells invalid UTF-8 apart from a small corpus."""
    if actual >= wanted:
        return
    msg = f"the trained tokenizer has {actual} pieces, fewer than vocab_size {wanted}"
    bad = getattr(stats, "invalid_utf8", 0)
    if bad:
        files = ", ".join(getattr(stats, "files_with_invalid_utf8", [])[:3])
        raise DataError(f"{msg}: the corpus is not UTF-8 ({bad:,} invalid UTF-8 bytes replaced by U+FFFD in the "
                        f"tokenizer sample, in {files}); convert it first, e.g. iconv -f latin1 -t utf-8, "
                        "or lower vocab_size")
    raise DataError(f"{msg}: the corpus sample has too few distinct pieces; use a larger corpus or "
                    f"tokenizer_sample_bytes, or set vocab_size <= {actual}")


def load_sentencepiece(model_path: str, strict_special_ids: bool = True) -> spm.SentencePieceProcessor:
    if not os.path.isfile(model_path):
        raise DataError(f"tokenizer model {model_path!r} does not exist")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(model_path)
    except (OSError, RuntimeError) as exc:
        raise DataError(f"{model_path}: not a SentencePiece model ({exc})") from exc
    if strict_special_ids and (sp.eos_id() < 0):
        raise DataError(f"{model_path}: SentencePiece model has no EOS piece; packing needs one")
    return sp


class SPTokenizer:
    """Thin, picklable wrapper used by the packing workers.

    Also the plain-file side of ``hf_tokenizer.load_tokenizer``'s common interface: no BOS is added
    (``add_bos`` False: our documents never start with one), generation stops at ``</s>`` only
    (``eos_token_ids``), and there is no chat template."""

    add_bos = False
    chat_template = None

    def __init__(self, model_path: str):
        self.model_path = model_path
        self.sp = load_sentencepiece(model_path)
        self.eos_id = self.sp.eos_id()
        self.vocab_size = self.sp.get_piece_size()

    @property
    def bos_id(self) -> int:
        return self.sp.bos_id()

    @property
    def eos_token_ids(self):
        return (self.eos_id,)

    def encode(self, text: str) -> List[int]:
        return self.sp.encode(text)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Control pieces (<s>, </s>, <pad>) decode to nothing either way (SentencePiece's rule)."""
        return self.sp.decode([int(i) for i in ids])

    def __getstate__(self):
        return {"model_path": self.model_path}

    def __setstate__(self, state):
        self.__init__(state["model_path"])
