"""Packed documents in the graph: from a row's `actual_seq_len`, what each layer needs so that
attention and RoPE positions stay inside each document (MindFormers' `use_eod_attn_mask_compression`).

`DocumentLayout(tokens [B, S], ends [B, K], freqs_cos, freqs_sin)` returns, per row:
  * `freqs` - (cos, sin) [B, 1, S, D] gathered from the model's rotary tables (LongRoPE included,
    models/rope.py) at each token's position inside its document, so positions restart at 0 in
    every document; MindFormers' RotaryEmbedding and the fused CPU attention take per-row tables;
  * `mask` - on CPU (no flash attention) MindFormers' additive mask [B, 1, S, S], causal and within
    each document: (1 - tril * same_document * not_pad(key)) * -10000, the same arithmetic as
    LowerTriangularMaskWithDynamic; with flash attention the caller passes MindFormers' compressed
    causal mask instead and attention follows `flat_ends`;
  * `flat_ends` - the ends in TND form for flash attention: each row's ends plus the row's token
    offset, flattened [B * K] (MindFormers' `asl_batch_wrapper`); under (semi-)auto parallel the
    offsets restart at every data-parallel shard of the batch, because flash attention splits this
    tensor with the batch and each shard reads its own tokens from 0;
  * `keep` - [B, S] float: 0 where the label starts another document (a document's last token,
    and a row's last token when it is EOS), else 1. The loss there is masked: that prediction would
    read across the boundary (data/documents.py `crossing_labels` is the numpy spec).

The document index of a position is the number of ends at or before it: a ScatterNd of ones at the
ends, then a cumulative sum (memory O(B * S), not O(B * S * K), for 32K rows).
"""
import numpy as np
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import operations as P

from ..data.documents import eos_ids  # noqa: F401  (re-exported: the model's EOS ids)

_F32 = ms.float32
_I32 = ms.int32
MASK_VALUE = -10000.0          # LowerTriangularMaskWithDynamic's multiply_data


class DocumentLayout(nn.Cell):
    """See the module docstring. `tnd`: the layers run flash attention in TND layout, which reads
    `flat_ends` (the dense mask is then not built: None); else the dense mask (`flat_ends` None).
    `data_parallel`: the split of the batch that flash attention applies to `flat_ends` under
    (semi-)auto parallel (1 otherwise)."""

    def __init__(self, seq_length: int, head_dim: int, eos: tuple, pad_token_id: int, tnd: bool = False,
                 data_parallel: int = 1):
        super().__init__()
        self.seq_length, self.head_dim = int(seq_length), int(head_dim)
        self.pad_token_id = int(pad_token_id)
        self.tnd = bool(tnd)
        self.dp = max(int(data_parallel), 1)
        self.eos = Tensor(np.asarray(eos if eos else [-1], np.int32))        # -1 matches no token
        self.shape = P.Shape()
        self.reshape = P.Reshape()
        self.cast = P.Cast()
        self.scatter = P.ScatterNd()
        self.cumsum = P.CumSum()
        self.gather = P.Gather()
        self.gather_d = P.GatherD()
        self.concat = P.Concat(axis=1)
        self.stack = P.Stack(axis=-1)
        self.equal = P.Equal()
        self.not_equal = P.NotEqual()
        self.mul = P.Mul()
        self.sub = P.Sub()
        self.add = P.Add()
        self.expand = P.ExpandDims()
        self.reduce_any = P.ReduceAny(keep_dims=False)

    def construct(self, tokens, ends, freqs_cos, freqs_sin):
        bs, seq = self.shape(tokens)
        width = self.shape(ends)[1]
        ends = ops.clip_by_value(self.cast(ends, _I32), Tensor(0, _I32), Tensor(seq, _I32))
        rows = ops.broadcast_to(self.reshape(ops.arange(bs, dtype=_I32), (bs, 1)), (bs, width))  # [B, K]
        marks = self.scatter(self.stack((rows, ends)), ops.ones((bs, width), _F32), (bs, seq + 1))  # [B, S+1]
        starts_here = marks[:, :seq]                                          # a document starts at p
        doc = self.cast(self.cumsum(starts_here, 1), _I32)                    # [B, S] document index
        starts = self.concat((ops.zeros((bs, 1), _I32), ends))                # [B, K+1]
        positions = self.sub(ops.arange(seq, dtype=_I32), self.gather_d(starts, 1, doc))    # [B, S]
        positions = self.reshape(positions, (-1,))
        cos = self.reshape(self.gather(freqs_cos, positions, 0), (bs, 1, seq, self.head_dim))
        sin = self.reshape(self.gather(freqs_sin, positions, 0), (bs, 1, seq, self.head_dim))
        # loss keep: the label of p starts a document when one starts at p + 1, or p holds EOS
        crossing = self.concat((marks[:, 1:seq], ops.zeros((bs, 1), _F32)))   # [B, S]
        is_eos = self.reduce_any(self.equal(self.expand(tokens, -1), self.eos), -1)          # [B, S]
        keep = self.mul(self.cast(self.equal(crossing, 0.0), _F32), self.cast(ops.logical_not(is_eos), _F32))
        if self.tnd:
            # TND ends: each row's ends plus its offset within its data-parallel shard, flattened
            per_shard = bs // self.dp
            offsets = self.reshape((ops.arange(bs, dtype=_I32) % per_shard) * seq, (bs, 1))
            return (cos, sin), None, self.reshape(self.add(ends, offsets), (-1,)), keep
        # additive mask (no flash attention): causal, same document, pad keys masked
        same = self.cast(self.equal(self.expand(doc, 2), self.expand(doc, 1)), _F32)         # [B, S, S]
        key_ok = self.expand(self.cast(self.not_equal(tokens, self.pad_token_id), _F32), 1)  # [B, 1, S]
        ar = ops.arange(seq, dtype=_I32)
        lower = self.cast(self.expand(ops.less_equal(self.expand(ar, 0), self.expand(ar, 1)), 0), _F32)  # [1, S, S]
        allowed = self.mul(self.mul(key_ok, lower), same)
        mask = self.expand(self.mul(self.sub(1.0, allowed), MASK_VALUE), 1)                 # [B, 1, S, S]
        return (cos, sin), mask, None, keep
