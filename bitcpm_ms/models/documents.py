"""Packed documents in the graph: from a row's `actual_seq_len`, what each layer needs so that
attention and RoPE positions stay inside each document (MindFormers' `use_eod_attn_mask_compression`).

`DocumentLayout(tokens [B, S], ends [B, K], freqs_cos, freqs_sin)` returns, per row:
  * `freqs` - (cos, sin) [B, 1, S, D] gathered from the model's rotary tables (LongRoPE included,
    models/rope.py) at each token's position inside its document, so positions restart at 0 in
    every document; MindFormers' RotaryEmbedding (its `mul_with_batch_freqs`) and the fused CPU
    attention take per-row tables;
  * `mask` - without flash attention, MindFormers' additive mask [B, 1, S, S], causal and within
    each document: (1 - tril * same_document * not_pad(key)) * -10000, the arithmetic of
    LowerTriangularMaskWithDynamic; with flash attention (TND) None: the caller passes MindFormers'
    compressed causal mask and attention follows `flat_ends`;
  * `flat_ends` - (TND only) the ends as flash attention reads them: each row's ends plus the row's
    token offset, flattened [B * K] (what MindFormers' `asl_batch_wrapper` feeds). Flash attention
    splits this tensor with the batch under data parallel and each shard counts its own tokens from
    0, so the offsets restart at every data-parallel shard of the batch;
  * `keep` - [B, S] float: 0 where the label starts another document (a document's last token, and
    a row's last token when it is EOS), else 1. The loss there is masked: that prediction would
    read across the boundary (data/documents.py `crossing_labels` is the numpy spec).

The document index of a position p is the number of ends <= p: SearchSorted(ends, p, right) (ends
are sorted; MindFormers pads them with seq_length). Memory O(B * S), fine for 32K rows. Under
(semi-)auto parallel every primitive here is replicated (these are [B, S] integer tensors), as
MindFormers' FreqsMgr does for its gather; the per-row tables then feed RotaryEmbedding's
batch-split multiply.
"""
import mindspore as ms
from mindspore import Tensor, nn, ops
from mindspore.ops import operations as P

from ..data.documents import eos_ids  # noqa: F401  (re-exported: the model's EOS ids)

_F32 = ms.float32
_I32 = ms.int32
MASK_VALUE = -10000.0          # LowerTriangularMaskWithDynamic's multiply_data


class DocumentLayout(nn.Cell):
    """See the module docstring. `tnd`: the layers run flash attention in TND layout (then
    `flat_ends` is built and the dense mask is not). `data_parallel`: the batch split that flash
    attention applies to `flat_ends` under (semi-)auto parallel (1 otherwise)."""

    def __init__(self, seq_length: int, head_dim: int, eos: tuple, pad_token_id: int, tnd: bool = False,
                 data_parallel: int = 1):
        super().__init__()
        self.seq_length, self.head_dim = int(seq_length), int(head_dim)
        self.pad_token_id = int(pad_token_id)
        self.tnd = bool(tnd)
        self.dp = max(int(data_parallel), 1)
        self.eos = Tensor(list(eos) if eos else [-1], _I32)                 # -1 matches no token
        self.shape = P.Shape()
        self.reshape = P.Reshape()
        # [B, S] index arithmetic
        self.clip_low, self.clip_high = P.Maximum(), P.Minimum()
        self.search = P.SearchSorted(right=True, dtype=_I32)
        self.cat_starts = P.Concat(axis=1)
        self.gather_start = P.GatherD()
        self.sub_pos = P.Sub()
        self.gather_cos, self.gather_sin = P.Gather(), P.Gather()
        # loss keep
        self.next_doc = P.NotEqual()
        self.cat_keep = P.Concat(axis=1)
        self.is_eos = P.Equal()
        self.any_eos = P.ReduceAny(keep_dims=False)
        self.not_eos = P.LogicalNot()
        self.and_keep = P.LogicalAnd()
        self.cast = P.Cast()
        # dense mask
        self.same_doc = P.Equal()
        self.causal = P.LessEqual()
        self.key_ok = P.NotEqual()
        self.and_causal, self.and_key = P.LogicalAnd(), P.LogicalAnd()
        self.cast_mask = P.Cast()
        self.sub_mask, self.mul_mask = P.Sub(), P.Mul()
        # TND ends
        self.row_mod, self.row_mul, self.add_offset = P.FloorMod(), P.Mul(), P.Add()

    def shard(self):
        """Replicated strategies for (semi-)auto parallel (see the module docstring)."""
        one2, one3 = (1, 1), (1, 1, 1)
        for prim, strategy in ((self.clip_low, (one2, ())), (self.clip_high, (one2, ())),
                               (self.search, (one2, one2)), (self.cat_starts, (one2, one2)),
                               (self.gather_start, (one2, one2)), (self.sub_pos, ((1,), one2)),
                               (self.gather_cos, (one2, (1,))), (self.gather_sin, (one2, (1,))),
                               (self.next_doc, (one2, one2)), (self.cat_keep, (one2, one2)),
                               (self.is_eos, (one3, (1,))), (self.any_eos, (one3,)), (self.not_eos, (one2,)),
                               (self.and_keep, (one2, one2)), (self.cast, (one2,)),
                               (self.same_doc, (one3, one3)), (self.causal, (one2, one2)),
                               (self.key_ok, (one2, ())), (self.and_causal, (one3, one3)),
                               (self.and_key, (one3, one3)), (self.cast_mask, (one3,)),
                               (self.sub_mask, ((), one3)), (self.mul_mask, (one3, ())),
                               (self.row_mod, ((1,), ())), (self.row_mul, ((1,), ())), (self.add_offset, (one2, one2))):
            prim.shard(strategy)

    def construct(self, tokens, ends, freqs_cos, freqs_sin):
        bs, seq = self.shape(tokens)
        ends = self.clip_high(self.clip_low(ends, 0), seq)                         # [B, K] int32
        pos = ops.arange(seq, dtype=_I32)                                          # [S]
        doc = self.search(ends, ops.broadcast_to(pos, (bs, seq)))                  # [B, S] document index
        starts = self.cat_starts((ops.zeros((bs, 1), _I32), ends))                 # [B, K + 1]
        positions = self.sub_pos(pos, self.gather_start(starts, 1, doc))           # [B, S] inside the document
        positions = self.reshape(positions, (-1,))                                 # [B * S]
        cos = self.reshape(self.gather_cos(freqs_cos, positions, 0), (bs, 1, seq, self.head_dim))
        sin = self.reshape(self.gather_sin(freqs_sin, positions, 0), (bs, 1, seq, self.head_dim))
        # keep the loss unless the label (next token) starts another document, or the token is EOS
        crossing = self.cat_keep((self.next_doc(doc[:, 1:], doc[:, :-1]), ops.zeros((bs, 1), ms.bool_)))
        eos = self.any_eos(self.is_eos(self.reshape(tokens, (bs, seq, 1)), self.eos), -1)      # [B, S]
        keep = self.cast(self.and_keep(self.not_eos(crossing), self.not_eos(eos)), _F32)
        if self.tnd:
            per_shard = bs // self.dp
            offsets = self.row_mul(self.row_mod(ops.arange(bs, dtype=_I32), per_shard), seq)    # [B]
            flat_ends = self.reshape(self.add_offset(ends, self.reshape(offsets, (bs, 1))), (-1,))
            return (cos, sin), None, flat_ends, keep
        # the additive mask: causal, same document, pad keys masked
        same = self.same_doc(self.reshape(doc, (bs, seq, 1)), self.reshape(doc, (bs, 1, seq)))     # [B, S, S]
        lower = self.causal(self.reshape(pos, (1, seq)), self.reshape(pos, (seq, 1)))            # [S, S] j <= i
        key_ok = self.reshape(self.key_ok(tokens, self.pad_token_id), (bs, 1, seq))              # [B, 1, S]
        allowed = self.and_key(self.and_causal(same, self.reshape(lower, (1, seq, seq))), key_ok)
        mask = self.mul_mask(self.sub_mask(1.0, self.cast_mask(allowed, _F32)), MASK_VALUE)       # [B, S, S]
        return (cos, sin), self.reshape(mask, (bs, 1, seq, seq)), None, keep
