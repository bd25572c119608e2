"""The fused C++ kernels (ctypes route) against the numpy references, on odd shapes, on every
instruction-set path this CPU can run; results independent of the thread count."""
import numpy as np
import pytest

from bitcpm_ms.fused import FusedOpError
from bitcpm_ms.fused import library as L
from bitcpm_ms.fused import reference as R

PATHS = [L.ISA_BEST, L.ISA_AVX2, L.ISA_PORTABLE]


@pytest.fixture(params=PATHS, ids=["best", "avx2", "portable"])
def isa(request):
    with L.isa_path(request.param) as name:
        yield name


def close(got, ref, rtol=2e-6, what=""):
    """Max error relative to the reference's largest magnitude (float32 vs float64 reference)."""
    err = float(np.abs(got - ref).max() / (np.abs(ref).max() + 1e-30))
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


def f32(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


@pytest.mark.parametrize("N,V", [(1, 1), (7, 17), (37, 1003), (5, 8192)])
def test_cross_entropy(isa, N, V):
    rng = np.random.default_rng(N * V)
    x = f32(rng, N, V, scale=4.0)
    labels = rng.integers(-2, V + 2, N).astype(np.int32)     # includes ignored ids (< 0, >= V)
    loss, lse = L.call_kernel("FusedCrossEntropyFwd", [x, labels], [(N,), (N,)])
    ref_loss, ref_lse = R.cross_entropy_forward(x, labels)
    close(loss, ref_loss, what="loss")
    close(lse, ref_lse, what="lse")
    assert np.all(loss[(labels < 0) | (labels >= V)] == 0)
    dloss, dlse = f32(rng, N), f32(rng, N)
    (g,) = L.call_kernel("FusedCrossEntropyBwd", [x, labels, lse, dloss, dlse], [(N, V)])
    close(g, R.cross_entropy_backward(x, labels, dloss, dlse), 1e-6, "dlogits")


def test_cross_entropy_extreme_logits(isa):
    x = np.array([[1e4, -1e4, 0.0, 50.0], [-88.0, -90.0, -200.0, -87.0]], np.float32)
    labels = np.array([1, 3], np.int32)
    loss, lse = L.call_kernel("FusedCrossEntropyFwd", [x, labels], [(2,), (2,)])
    ref_loss, ref_lse = R.cross_entropy_forward(x, labels)
    close(loss, ref_loss, what="loss")
    close(lse, ref_lse, what="lse")


@pytest.mark.parametrize("N,V,T", [(1, 1, 1.0), (7, 17, 2.0), (37, 1003, 0.7), (5, 8192, 4.0), (6, 33, 1.0)])
def test_distill(isa, N, V, T):
    rng = np.random.default_rng(N * V)
    s, t = f32(rng, N, V, scale=4.0), f32(rng, N, V, scale=4.0)
    labels = rng.integers(-2, V + 2, N).astype(np.int32)     # includes ignored ids (< 0, >= V)
    spec = np.array([1.0 / T], np.float32)
    ce, kl, stats = L.call_kernel("FusedDistillFwd", [s, t, labels, spec], [(N,), (N,), (N, 3)])
    ref_ce, ref_kl, ref_stats = R.distill_forward(s, t, labels, T)
    close(ce, ref_ce, what="ce")
    close(kl, ref_kl, 1e-5, "kl")
    close(stats, ref_stats, what="stats")
    assert np.all(kl >= -1e-5)
    dce, dkl = f32(rng, N), f32(rng, N)
    (g,) = L.call_kernel("FusedDistillBwd", [s, t, labels, spec, stats, dce, dkl], [(N, V)])
    close(g, R.distill_backward(s, t, labels, T, dce, dkl), 1e-5, "ds")


def test_distill_of_equal_logits_has_no_kl_and_bad_temperature_is_named(isa):
    x = f32(np.random.default_rng(0), 3, 50, scale=3.0)
    labels = np.array([0, 7, 49], np.int32)
    _, kl, _ = L.call_kernel("FusedDistillFwd", [x, x, labels, np.array([0.5], np.float32)], [(3,), (3,), (3, 3)])
    assert np.abs(kl).max() < 1e-5
    with pytest.raises(FusedOpError, match="1 / T > 0"):
        L.call_kernel("FusedDistillFwd", [x, x, labels, np.array([0.0], np.float32)], [(3,), (3,), (3, 3)])


@pytest.mark.parametrize("shape", [(1, 3), (3, 7, 45), (64, 256), (2, 5, 19)])
def test_rms_norm(isa, shape):
    rng = np.random.default_rng(sum(shape))
    x, w, dy = f32(rng, *shape), f32(rng, shape[-1]), f32(rng, *shape)
    rows = int(np.prod(shape[:-1]))
    y, rstd = L.call_kernel("FusedRmsNormFwd", [x, w, np.array([1e-6], np.float32)], [shape, (rows,)])
    ref_y, ref_rstd = R.rmsnorm_forward(x, w, 1e-6)
    close(y, ref_y, what="y")
    close(rstd, ref_rstd.reshape(-1), what="rstd")
    dx, dw = L.call_kernel("FusedRmsNormBwd", [x, w, rstd, dy], [shape, (shape[-1],)])
    ref_dx, ref_dw = R.rmsnorm_backward(x, w, dy, 1e-6)
    close(dx, ref_dx, what="dx")
    close(dw, ref_dw, what="dw")


@pytest.mark.parametrize("shape", [(1,), (5, 999), (2, 3, 4096), (17,)])
def test_swiglu(isa, shape):
    rng = np.random.default_rng(sum(shape))
    g, u, dh = f32(rng, *shape, scale=5.0), f32(rng, *shape), f32(rng, *shape)
    (h,) = L.call_kernel("FusedSwigluFwd", [g, u], [shape])
    close(h, R.swiglu_forward(g, u), what="h")
    dg, du = L.call_kernel("FusedSwigluBwd", [g, u, dh], [shape, shape])
    ref_dg, ref_du = R.swiglu_backward(g, u, dh)
    close(dg, ref_dg, what="dg")
    close(du, ref_du, what="du")


def attention_case(rng, B, S, H, Hkv, D, pad=None, mask_batch=True):
    q, k, v = f32(rng, B, S, H * D), f32(rng, B, S, Hkv * D), f32(rng, B, S, Hkv * D)
    ang = rng.uniform(0, 6, (S, D // 2))
    cos = np.cos(np.concatenate([ang, ang], 1)).astype(np.float32)
    sin = np.sin(np.concatenate([ang, ang], 1)).astype(np.float32)
    tokens = rng.integers(1, 50, (B, S))
    if pad is not None:
        tokens[pad] = 0                                       # pad keys are masked too
    mask = R.causal_mask(tokens)
    if not mask_batch:
        mask = mask[:1]
        tokens = tokens[:1].repeat(B, 0)
    return q, k, v, cos, sin, mask


def run_attention(q, k, v, cos, sin, mask, H, Hkv, dout):
    B, S, _ = q.shape
    spec = np.array([H, Hkv, 1.0 / np.sqrt(q.shape[2] // H)], np.float32)
    out, stats = L.call_kernel("FusedAttentionFwd", [q, k, v, cos, sin, mask, spec], [q.shape, (B, H, S, 2)])
    grads = L.call_kernel("FusedAttentionBwd", [q, k, v, cos, sin, mask, spec, out, stats, dout],
                          [q.shape, k.shape, k.shape])
    return out, stats, grads


def check_attention(q, k, v, cos, sin, mask, H, Hkv, dout):
    """Runs the attention kernels and compares out (2e-6) and dq/dk/dv (4e-6) with the numpy
    reference under the same mask; returns the forward stats."""
    out, stats, grads = run_attention(q, k, v, cos, sin, mask, H, Hkv, dout)
    close(out, R.attention_forward(q, k, v, cos, sin, mask, H, Hkv), 2e-6, "out")
    for got, ref, name in zip(grads, R.attention_backward(q, k, v, cos, sin, mask, H, Hkv, dout), ("dq", "dk", "dv")):
        close(got, ref, 4e-6, name)
    return stats


@pytest.mark.parametrize("B,S,H,Hkv,D", [(1, 1, 1, 1, 2), (2, 37, 3, 1, 20), (3, 19, 4, 2, 64),
                                         (1, 70, 6, 3, 34), (2, 9, 2, 2, 16)])
def test_attention_causal(isa, B, S, H, Hkv, D):
    rng = np.random.default_rng(B * S * H + D)
    q, k, v, cos, sin, mask = attention_case(rng, B, S, H, Hkv, D)
    dout = f32(rng, B, S, H * D)
    stats = check_attention(q, k, v, cos, sin, mask, H, Hkv, dout)
    # causal skipping happened: row i was computed over at most the next multiple of 4 keys
    n = stats[..., 1]
    assert np.all(n <= np.minimum(S, (np.arange(S) // 4 + 1) * 4))


def test_attention_padding_and_fully_masked_rows(isa):
    """Pad keys inside the window are masked (-10000 added, as MindFormers does); query rows
    whose keys are all masked fall back to the full row, as softmax over -10000 + s does. The
    reference is float64; float32 rounding of s - 10000 bounds the accuracy of those rows."""
    rng = np.random.default_rng(5)
    B, S, H, Hkv, D = 2, 23, 4, 2, 8
    q, k, v, cos, sin, mask = attention_case(rng, B, S, H, Hkv, D, pad=(slice(None), slice(0, 3)))
    mask[1, 0, 10:, 12] = -10000.0                                 # one more masked key
    dout = f32(rng, B, S, H * D)
    out, stats, (dq, dk, dv) = run_attention(q, k, v, cos, sin, mask, H, Hkv, dout)
    ref = R.attention_forward(q, k, v, cos, sin, mask, H, Hkv)
    full_rows = slice(0, 3)                                        # every key masked
    assert np.all(stats[:, :, 0:4, 1] == S)                       # computed over all keys
    close(out[:, full_rows], ref[:, full_rows], 1e-3, "fully masked rows")
    close(out[:, 4:], ref[:, 4:], 2e-6, "rows with unmasked keys")
    for got, r, name in zip((dq, dk, dv), R.attention_backward(q, k, v, cos, sin, mask, H, Hkv, dout),
                            ("dq", "dk", "dv")):
        close(got, r, 1e-3, name)


def test_attention_large_scores_are_not_skipped(isa):
    """Huge q and k: masked keys could carry weight (s - 10000 > rowmax - 104), so the kernel
    must compute full rows; the result equals the reference with its mask."""
    rng = np.random.default_rng(9)
    B, S, H, Hkv, D = 1, 12, 2, 1, 8
    q, k, v, cos, sin, mask = attention_case(rng, B, S, H, Hkv, D)
    q *= 300.0
    k *= 300.0
    dout = f32(rng, B, S, H * D)
    out, stats, (dq, dk, dv) = run_attention(q, k, v, cos, sin, mask, H, Hkv, dout)
    assert np.any(stats[..., 1] == S)
    close(out, R.attention_forward(q, k, v, cos, sin, mask, H, Hkv), 1e-4, "out")


def test_attention_mask_shared_over_batch(isa):
    rng = np.random.default_rng(13)
    q, k, v, cos, sin, mask = attention_case(rng, 3, 11, 2, 1, 6, mask_batch=False)
    dout = f32(rng, 3, 11, 12)
    out, _, (dq, _, _) = run_attention(q, k, v, cos, sin, mask, 2, 1, dout)
    close(out, R.attention_forward(q, k, v, cos, sin, mask, 2, 1), 2e-6, "out")
    close(dq, R.attention_backward(q, k, v, cos, sin, mask, 2, 1, dout)[0], 4e-6, "dq")


def test_results_do_not_depend_on_thread_count():
    rng = np.random.default_rng(21)
    q, k, v, cos, sin, mask = attention_case(rng, 3, 29, 4, 2, 16)
    dout = f32(rng, 3, 29, 64)
    x, w, dy = f32(rng, 100, 48), f32(rng, 48), f32(rng, 100, 48)
    runs = []
    old = L.get_num_threads()
    try:
        for n in (1, 2, 3):
            L.set_num_threads(n)
            att = run_attention(q, k, v, cos, sin, mask, 4, 2, dout)
            y, rstd = L.call_kernel("FusedRmsNormFwd", [x, w, np.array([1e-5], np.float32)], [x.shape, (100,)])
            norm = L.call_kernel("FusedRmsNormBwd", [x, w, rstd, dy], [x.shape, (48,)])
            runs.append([att[0], *att[2], y, *norm])
    finally:
        L.set_num_threads(old)
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            np.testing.assert_array_equal(a, b)


def test_kernel_rejects_bad_shapes_by_name():
    x = np.zeros((4, 10), np.float32)
    with pytest.raises(FusedOpError, match="FusedCrossEntropyFwd.*one value per token"):
        L.call_kernel("FusedCrossEntropyFwd", [x, np.zeros(3, np.int32)], [(4,), (4,)])
    with pytest.raises(FusedOpError, match="FusedCrossEntropyFwd: tensor 1 must be int32"):
        L.call_kernel("FusedCrossEntropyFwd", [x, np.zeros(4, np.float32)], [(4,), (4,)])
    q = np.zeros((1, 4, 6), np.float32)
    with pytest.raises(FusedOpError, match="head_dim must be even"):
        L.call_kernel("FusedAttentionFwd", [q, q, q, np.zeros((4, 3), np.float32), np.zeros((4, 3), np.float32),
                                            np.zeros((1, 1, 4, 4), np.float32), np.array([2, 2, 1.0], np.float32)],
                      [q.shape, (1, 2, 4, 2)])
    with pytest.raises(FusedOpError, match="float32 or int32"):
        L.call_kernel("FusedSwigluFwd", [np.zeros(3, np.float64), np.zeros(3, np.float32)], [(3,)])


def test_isa_paths_reported():
    with L.isa_path(L.ISA_PORTABLE) as name:
        assert name == "portable"
    with pytest.raises(ValueError, match="max ISA level"):
        L.set_max_isa(7)
