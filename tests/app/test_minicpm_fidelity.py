"""Slow: our import against the REAL MiniCPM4 modeling code (transformers 4.46.3), where its reference
models exist (made by benchmarks/minicpm_reference.py in a scratch torch environment; set
BITCPM_MS_MINICPM_REFS, default /work/refs/models). Every forward path within 1e-4 of the real logits
and the same top-1 at all 320 positions; the full table is benchmarks/minicpm_fidelity.py."""
import os

import pytest

pytestmark = pytest.mark.slow

REFS = os.environ.get("BITCPM_MS_MINICPM_REFS", "/work/refs/models")
MODELS = sorted(d for d in os.listdir(REFS) if os.path.isfile(os.path.join(REFS, d, "ref_logits.npy"))) \
    if os.path.isdir(REFS) else []


@pytest.mark.skipif(not MODELS, reason=f"no reference models in {REFS} (benchmarks/minicpm_reference.py)")
@pytest.mark.parametrize("name", MODELS)
def test_every_forward_path_equals_the_real_modeling_code(name, tmp_path):
    from benchmarks.minicpm_fidelity import run_model
    row, _ = run_model(os.path.join(REFS, name), str(tmp_path), with_gguf=False)
    paths = {k: v for k, v in row.items() if isinstance(v, dict) and "max_rel" in v}
    assert {"numpy_reference", "graph_fused_cpu_ops", "graph_op_chain"} <= set(paths)
    assert any(k.startswith("decode") for k in paths)
    for path, r in paths.items():
        assert r["max_rel"] <= 1e-4 and r["top1"] == 1.0, (path, r)
