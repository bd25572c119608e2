"""Bad configs and CLI input give clear errors that name the problem."""
import pytest

from bitcpm_ms.app.config import load_config
from bitcpm_ms.app.overrides import parse_overrides
from bitcpm_ms.errors import ConfigError
from bitcpm_ms.quant import QuantConfig

from ..helpers import TINY_YAML, run_cli


def test_overrides_parse_yaml_scalars_and_select_list_items_by_type():
    ov = parse_overrides(["--quant.enabled", "false", "--quant.group_size=64", "--lr_schedule.learning_rate",
                          "1e-3", "--quant.act_bits", "null", "--callbacks.BitCPMMetricsMonitor.log_interval", "3"])
    assert ov["quant.enabled"] is False and ov["quant.group_size"] == 64 and ov["quant.act_bits"] is None
    assert ov["lr_schedule.learning_rate"] == pytest.approx(1e-3)
    cfg = load_config(TINY_YAML, ov)
    assert cfg.model.model_config.qat_config.enabled is False
    assert [c for c in cfg.callbacks if c["type"] == "BitCPMMetricsMonitor"][0]["log_interval"] == 3


def test_quant_section_is_copied_into_model_config():
    cfg = load_config(TINY_YAML, {"quant.group_size": 32})
    assert cfg.model.model_config.qat_config.group_size == 32


@pytest.mark.parametrize("overrides, match", [
    ({"quant.quant_space": "binary"}, "quant_space"),
    ({"quant.group_size": 0}, "group_size"),
    ({"quant.group_size": 48}, "does not divide model hidden_size=256"),
    ({"quant.act_bits": 3}, "act_bits"),
    ({"quant.enabled": "yes"}, "enabled"),
    ({"quant.group_sise": 64}, "unknown key"),
    ({"qaunt.group_size": 64}, "no top-level section 'qaunt'"),
    ({"callbacks.7.log_interval": 1}, "neither an index nor the type"),
    ({"quant.group_size.x": 1}, "is a value, not a section"),
    ({"lr_schedule.total_steps": 10}, "rounds to 0 warmup steps"),
])
def test_bad_overrides(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(TINY_YAML, overrides)


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(bad))
    nomodel = tmp_path / "nomodel.yaml"
    nomodel.write_text("runner_config: {epochs: 1}\ncontext: {mode: 0}\n")
    with pytest.raises(ConfigError, match="'model' needs 'model_config' and 'arch'"):
        load_config(str(nomodel))


def test_quant_config_validation_messages():
    with pytest.raises(ValueError, match="does not divide the layer's input width 100"):
        QuantConfig(group_size=64).group_for(100)
    with pytest.raises(ValueError, match="targets"):
        QuantConfig(targets=[])
    assert QuantConfig(quant_space="5-value").quant_space == "five"
    assert QuantConfig.from_dict(None).enabled is False


def test_cli_reports_errors_without_traceback(tmp_path):
    res = run_cli(["--config", TINY_YAML, "--quant.group_size", "48", "--output_dir", str(tmp_path / "o")])
    assert res.returncode == 2 and "does not divide" in res.stderr and "Traceback" not in res.stderr
    res = run_cli(["--config", TINY_YAML, "--output_dir", str(tmp_path / "o"),
                   "--train_dataset.data_loader.dataset_dir", str(tmp_path / "nowhere")])
    assert res.returncode == 2 and "no MindRecord files" in res.stderr
    res = run_cli(["--config", TINY_YAML, "--max_steps", "0"])
    assert res.returncode == 2 and "max_steps" in res.stderr
