"""A run's config_resolved.json loads as a run config (bitcpm-eval's config=, like the YAML it came from)."""
import json

import pytest
import yaml

from bitcpm_ms.app.config import load_config
from bitcpm_ms.errors import ConfigError
from bitcpm_ms.testing import TINY_YAML


def test_resolved_json_loads_like_its_yaml(tmp_path):
    with open(TINY_YAML, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["lr_schedule"]["learning_rate"] = 1e-05          # YAML 1.1 would read '1e-05' as text
    path = tmp_path / "config_resolved.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    cfg = load_config(str(path), {"model.model_config.seq_length": 64})
    assert cfg.lr_schedule.learning_rate == 1e-05
    assert cfg.model.model_config.seq_length == 64
    assert cfg.model.model_config.qat_config["enabled"] == doc["quant"]["enabled"]


def test_broken_json_is_named(tmp_path):
    path = tmp_path / "config_resolved.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config_resolved.json is not valid JSON"):
        load_config(str(path))
