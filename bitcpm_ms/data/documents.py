"""Document boundaries inside packed samples: the `actual_seq_len` column (numpy; the spec).

A packed sample is `seq_length + 1` ids cut from a stream of documents, each ending with EOS. The
model reads the first `seq_length` ids as inputs. `actual_seq_len` is MindFormers' name (the
compressed EOD mask of its Megatron dataset, fed to flash attention in TND layout) for the
cumulative ends of the documents among those inputs: document k holds input positions
[end[k-1], end[k]) with end[-1] = 0. A document ends after its EOS; the last document ends at
`seq_length`; the row is padded to a fixed width with `seq_length` (MindFormers' padding), so

    ids  = a a EOS b b b EOS c c | c        (seq_length 9; the last id is only a label)
    ends = [3, 7, 9, 9, 9, ...]             documents a (0-2), b (3-6), c (7-8)

A document longer than a sample is cut at the sample edges, and every piece is a document of its
own (the next sample starts a new one at position 0). Valid rows: values in [1, seq_length],
strictly increasing until the first `seq_length`, then `seq_length` only. `check_actual_seq_len`
names every other case (ActualSeqLenError).

The layout the model derives (models/documents.py, in graph): per input position its document
index, its position inside the document (RoPE restarts at 0 in every document), attention only
within the document, and the loss kept except where the label starts another document.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from .errors import DataError

ACTUAL_SEQ_LEN = "actual_seq_len"
DEFAULT_EOD_PAD_LENGTH = 128      # MindFormers' default compressed_eod_mask_length


class ActualSeqLenError(DataError):
    """An `actual_seq_len` row that does not describe the documents of a sample (see module doc)."""


def rows_actual_seq_len(rows: np.ndarray, eos_id: int, width: int, where: str = "") -> np.ndarray:
    """`actual_seq_len` [n, width] int32 of packed rows [n, seq_length + 1] (ends after every EOS
    among the inputs, then seq_length). DataError when a row holds more than `width` documents."""
    rows = np.asarray(rows)
    n, length = rows.shape
    seq = length - 1
    eos = rows[:, : seq - 1] == eos_id                       # an EOS at seq - 1 ends the row anyway
    counts = eos.sum(axis=1)
    if n and int(counts.max()) + 1 > width:
        raise DataError(f"{where}a sample of {seq} input tokens holds {int(counts.max()) + 1} documents, more than "
                        f"eod_pad_length {width} (the width of the actual_seq_len column); raise "
                        f"data.eod_pad_length (up to seq_length / 2 + 1 = {seq // 2 + 1}) and prepare again")
    out = np.full((n, width), seq, np.int32)
    r, p = np.nonzero(eos)                                   # row-major: positions ascending per row
    slot = np.arange(len(r)) - np.repeat(np.cumsum(counts) - counts, counts)
    out[r, slot] = p + 1
    return out


def check_actual_seq_len(values, seq_length: int, where: str = "actual_seq_len") -> np.ndarray:
    """`values` [..., K] as int64 when every row is valid (see module doc), else ActualSeqLenError
    naming the row and the problem: a value beyond seq_length (or below 1), values not increasing,
    or a row that does not end at seq_length (tokens after its last end would be in no document)."""
    a = np.asarray(values)
    if a.ndim < 1 or a.shape[-1] < 1 or not np.issubdtype(a.dtype, np.integer):
        raise ActualSeqLenError(f"{where} must be integer rows of document ends, got {a.dtype} {list(a.shape)}")
    a = a.astype(np.int64).reshape(-1, a.shape[-1])
    for i, row in enumerate(a):
        name = f"{where} row {i}" if len(a) > 1 else where
        bad = np.nonzero(row > seq_length)[0]
        if len(bad):
            raise ActualSeqLenError(f"{name}: value {int(row[bad[0]])} at index {int(bad[0])} is beyond "
                                    f"seq_length {seq_length} (document ends lie in [1, {seq_length}])")
        bad = np.nonzero(row < 1)[0]
        if len(bad):
            raise ActualSeqLenError(f"{name}: value {int(row[bad[0]])} at index {int(bad[0])} is below 1 "
                                    f"(document ends lie in [1, {seq_length}])")
        step = np.diff(row)
        bad = np.nonzero((step < 0) | ((step == 0) & (row[:-1] < seq_length)))[0]
        if len(bad):
            j = int(bad[0])
            raise ActualSeqLenError(f"{name}: not increasing at index {j + 1} ({int(row[j])} then "
                                    f"{int(row[j + 1])}); document ends must increase, padded with seq_length "
                                    f"{seq_length}")
        if row[-1] != seq_length:
            raise ActualSeqLenError(f"{name}: last value {int(row[-1])} is not seq_length {seq_length}; "
                                    f"the tokens after it would belong to no document (is the column too narrow?)")
    return a


def eos_ids(config) -> tuple:
    """A model config's EOS id(s) as a tuple of ints (MiniCPM4 lists two: [2, 73440])."""
    eos = getattr(config, "eos_token_id", None)
    if eos is None:
        return ()
    return tuple(int(e) for e in (eos if isinstance(eos, (list, tuple)) else [eos]))


# ---------------------------------------------------------------- the layout (reference for the graph)
def document_ids(ends: np.ndarray, seq_length: int) -> np.ndarray:
    """[n, K] ends -> [n, seq_length]: the document index of every input position."""
    ends = np.asarray(ends).reshape(-1, np.shape(ends)[-1])
    pos = np.arange(seq_length)
    return (ends[:, None, :] <= pos[None, :, None]).sum(axis=-1)


def position_ids(ends: np.ndarray, seq_length: int) -> np.ndarray:
    """[n, K] ends -> [n, seq_length]: each position's offset inside its document (RoPE position)."""
    ends = np.asarray(ends).reshape(-1, np.shape(ends)[-1])
    doc = document_ids(ends, seq_length)
    starts = np.concatenate([np.zeros((len(ends), 1), ends.dtype), ends], axis=1)
    return np.arange(seq_length)[None, :] - np.take_along_axis(starts, doc, axis=1)


def crossing_labels(ends: np.ndarray, tokens: np.ndarray, eos_ids: Iterable[int]) -> np.ndarray:
    """[n, S] bool: positions whose label (the next id) starts another document: the last token of
    every document but the row's last, and the row's last token when it is EOS (its label, the
    sample's extra id, then starts the next document). Their loss is masked."""
    tokens = np.asarray(tokens)
    n, seq = tokens.shape
    doc = document_ids(ends, seq)
    out = np.zeros((n, seq), bool)
    out[:, :-1] = doc[:, 1:] != doc[:, :-1]
    out |= np.isin(tokens, np.asarray(list(eos_ids)))
    return out


def split_documents(ids: Sequence[int], ends: Sequence[int]) -> list:
    """The documents of one row's inputs as arrays (for tests: each can be run alone)."""
    ids = np.asarray(ids)
    cuts = sorted(set(int(e) for e in ends))
    starts = [0] + cuts[:-1]
    return [ids[s:e] for s, e in zip(starts, cuts) if e > s]
