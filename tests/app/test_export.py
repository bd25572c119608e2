"""convert -> export: the packed model (fused C++ ternary matmul) and its reloaded MindIR give the
fake-quant model's logits, in weight-only and W1.58A8 modes; linear weights shrink ~16x."""
import json
import os

import mindspore as ms
import pytest

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.artifacts import build_model
from bitcpm_ms.app.export import export_packed

from ..helpers import SMALL_MODEL, TINY_YAML


def _config(**extra):
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    ov.update(extra)
    return load_config(TINY_YAML, ov)


@pytest.mark.parametrize("act_bits", [None, 8])
def test_packed_model_and_mindir_match_fake_quant(tmp_path, act_bits):
    cfg = _config(**{"quant.act_bits": act_bits, "quant.group_size": 32})
    net = build_model(cfg)
    ms.save_checkpoint(net, str(tmp_path / "qat.ckpt"))
    s = export_packed(_config(**{"quant.act_bits": act_bits, "quant.group_size": 32}), str(tmp_path / "qat.ckpt"),
                      str(tmp_path / "export"), batch_size=1)
    assert s["quantized_layers"] == 14
    # logits ~O(1): float reassociation only (integer part exact in A8)
    assert s["max_abs_diff_packed_vs_fake_quant"] < 1e-4 * max(1.0, s["logit_scale"])
    assert s["max_abs_diff_mindir_vs_fake_quant"] < 1e-4 * max(1.0, s["logit_scale"])
    # 2 bits per weight + one fp32 scale per 32 weights = 3 bits vs 32: > 10x smaller
    assert s["latent_linear_bytes"] / s["packed_linear_bytes"] > 10
    assert sorted(os.listdir(tmp_path / "export")) == ["export.json", "model.mindir", "model_packed.ckpt",
                                                         "model_packed.ckpt.json"]   # + its sha256 sidecar
    assert json.load(open(tmp_path / "export" / "export.json"))["act_bits"] == act_bits


def test_export_cli_errors(tmp_path):
    """A missing checkpoint is a clear error and leaves no output directory behind."""
    env_args = ["--config", TINY_YAML, "--checkpoint", str(tmp_path / "none"), "--output_dir", str(tmp_path / "e")]
    import subprocess
    import sys
    from ..helpers import ROOT
    res = subprocess.run([sys.executable, os.path.join(ROOT, "run", "export_bitcpm.py"), *env_args],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "does not exist" in res.stderr
    assert not (tmp_path / "e").exists()
