"""The fused attention kernel on packed documents: per-row RoPE tables (positions restart at every
document) and the block-diagonal causal mask, against the numpy reference on odd shapes, and each
document's output / gradients equal to the kernel run on that document alone."""
import numpy as np
import pytest

from bitcpm_ms.data.documents import position_ids, rows_actual_seq_len
from bitcpm_ms.fused import library as L
from bitcpm_ms.fused import reference as R

from .test_library import check_attention, close, f32, isa, run_attention  # noqa: F401  (isa: fixture)

EOS = 2


def tables(pos, D):
    """cos / sin [B, S, D] for integer positions [B, S] (rotate-half layout)."""
    inv = 1.0 / (10000.0 ** (np.arange(0, D, 2) / D))
    ang = pos[..., None] * inv
    emb = np.concatenate([ang, ang], axis=-1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def packed_case(rng, B, S, H, Hkv, D, eos_at):
    """Rows whose inputs have EOS at the positions `eos_at[b]` (documents end there)."""
    ids = rng.integers(5, 50, (B, S + 1))
    for b, where in enumerate(eos_at):
        ids[b, list(where)] = EOS
    ends = rows_actual_seq_len(ids, EOS, 8)
    cos, sin = tables(position_ids(ends, S), D)
    q, k, v = f32(rng, B, S, H * D), f32(rng, B, S, Hkv * D), f32(rng, B, S, Hkv * D)
    return ids[:, :S], ends, q, k, v, cos, sin, R.document_mask(ids[:, :S], ends)


@pytest.mark.parametrize("B,S,H,Hkv,D,eos_at", [
    (2, 13, 3, 1, 6, [(0, 5), (11, 12)]),            # boundaries at position 1 and at the last position
    (1, 29, 4, 2, 20, [(3, 9, 20)]),
    (3, 7, 2, 2, 34, [(), (2,), (0, 1, 2, 3, 4, 5, 6)]),
])
def test_packed_attention_matches_the_reference(isa, B, S, H, Hkv, D, eos_at):
    rng = np.random.default_rng(S * D + B)
    _, ends, q, k, v, cos, sin, mask = packed_case(rng, B, S, H, Hkv, D, eos_at)
    dout = f32(rng, B, S, H * D)
    check_attention(q, k, v, cos, sin, mask, H, Hkv, dout)


def test_each_document_equals_the_document_alone(isa):
    B, S, H, Hkv, D = 2, 23, 4, 2, 16
    rng = np.random.default_rng(7)
    tokens, ends, q, k, v, cos, sin, mask = packed_case(rng, B, S, H, Hkv, D, [(0, 6, 15), (21,)])
    dout = f32(rng, B, S, H * D)
    out, _, (dq, dk, dv) = run_attention(q, k, v, cos, sin, mask, H, Hkv, dout)
    for b in range(B):
        starts = [0] + [int(e) for e in ends[b] if e < S]
        stops = starts[1:] + [S]
        for s, e in zip(starts, stops):
            n = e - s
            c1, s1 = tables(np.arange(n)[None], D)
            alone = R.causal_mask(tokens[b:b + 1, s:e])
            o1, _, (dq1, dk1, dv1) = run_attention(q[b:b + 1, s:e], k[b:b + 1, s:e], v[b:b + 1, s:e], c1, s1,
                                                   alone, H, Hkv, dout[b:b + 1, s:e])
            close(out[b:b + 1, s:e], o1, 1e-6, f"out row {b} doc [{s}, {e})")
            for got, ref, name in ((dq, dq1, "dq"), (dk, dk1, "dk"), (dv, dv1, "dv")):
                close(got[b:b + 1, s:e], ref, 1e-6, f"{name} row {b} doc [{s}, {e})")


def test_per_row_tables_must_match_the_batch():
    rng = np.random.default_rng(0)
    q, k = f32(rng, 2, 5, 8), f32(rng, 2, 5, 8)
    mask = R.causal_mask(np.ones((2, 5), np.int64))
    spec = np.array([2, 2, 0.5], np.float32)
    bad = np.zeros((3, 5, 4), np.float32)                     # 3 tables for a batch of 2
    with pytest.raises(Exception, match="cos and sin must hold"):
        L.call_kernel("FusedAttentionFwd", [q, k, k, bad, bad, mask, spec], [q.shape, (2, 2, 5, 2)])
