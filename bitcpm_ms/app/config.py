"""Load a MindFormers-style YAML, apply dotted command-line overrides, validate our sections.

`--a.b.c value` overrides (parsed by `overrides.py`) work like MindFormers' run_mindformer.py. An
override whose top-level section does not exist in the file is an error (a typo would otherwise
be silently ignored).
"""
import json
import os
from typing import Dict, Optional

import yaml
from mindformers.tools.register import MindFormerConfig

from ..errors import ConfigError
from .distill import DistillConfig
from .documents import sync_document_columns
from .quant_section import sync_quant_section
from .preflight import check_config_values

DEFAULT_KEYS = {"init_from_checkpoint": "", "require_init_checkpoint": False, "allow_random_init": False,
                "distill": None}


def add_default_keys(config) -> None:
    """Give a config the keys above when its YAML does not have them (before overrides apply)."""
    for key, value in DEFAULT_KEYS.items():
        if key not in config:
            config[key] = value


def check_keys(config) -> Optional[DistillConfig]:
    """Validate the keys above (after overrides). The init policy (`check_init_policy`) is checked
    when training starts, so a production YAML still loads for inspection, eval or export."""
    for key in ("require_init_checkpoint", "allow_random_init"):
        if not isinstance(config.get(key), bool):
            raise ConfigError(f"{key} must be true or false, got {config.get(key)!r}")
    init = config.get("init_from_checkpoint")
    if init is None:
        config.init_from_checkpoint = init = ""
    if not isinstance(init, str):
        raise ConfigError(f"init_from_checkpoint must be a checkpoint path or '', got {init!r}")
    return DistillConfig.from_section(config.get("distill"))


REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _list_index(items: list, part: str, key: str, where: str) -> int:
    """A list element by position ('1') or by its `type` ('BitCPMMetricsMonitor')."""
    if part.isdigit() and int(part) < len(items):
        return int(part)
    matches = [i for i, item in enumerate(items) if isinstance(item, dict) and item.get("type") == part]
    if len(matches) == 1:
        return matches[0]
    types = [item.get("type") for item in items if isinstance(item, dict)]
    raise ConfigError(f"override --{key}: {where} is a list of {len(items)} items {types}; "
                      f"{part!r} is neither an index nor the type of exactly one item")


def apply_overrides(config: MindFormerConfig, overrides: Dict[str, object]) -> None:
    """Set each dotted key. In lists, a part selects an item by index or by its `type`
    (`--callbacks.BitCPMMetricsMonitor.log_interval 5`)."""
    for key, value in overrides.items():
        parts = key.split(".")
        if parts[0] not in config:
            raise ConfigError(f"override --{key}: the config has no top-level section {parts[0]!r} "
                              f"(sections: {sorted(config.keys())})")
        node = config
        for j, part in enumerate(parts):
            last = j == len(parts) - 1
            where = ".".join(parts[:j]) or "<root>"
            if isinstance(node, list):
                part = _list_index(node, part, key, where)
            elif not isinstance(node, dict):
                raise ConfigError(f"override --{key}: {where} is a value, not a section")
            if last:
                node[part] = value
            else:
                if isinstance(node, dict) and (part not in node or node[part] is None):
                    node[part] = MindFormerConfig()
                node = node[part]


def load_config(path: str, overrides: Dict[str, object] = None) -> MindFormerConfig:
    """Read the YAML, apply overrides, validate the quant section and copy it into the model config."""
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    # `auto_register: bitcpm_register.X` (kept for run_mindformer.py) resolves under REGISTER_PATH
    os.environ.setdefault("REGISTER_PATH", REPO_ROOT)
    try:
        if path.endswith(".json"):      # a run's config_resolved.json: json, not YAML 1.1 (which reads 1e-05 as text)
            with open(path, encoding="utf-8") as f:
                config = MindFormerConfig(**json.load(f))
        else:
            config = MindFormerConfig(os.path.realpath(path))
    except (yaml.YAMLError, ValueError) as err:    # MindFormers re-raises YAML errors as ValueError
        kind = "JSON" if path.endswith(".json") else "YAML"
        raise ConfigError(f"config file {path} is not valid {kind}: {err}") from None
    for section in ("model", "runner_config", "context"):
        if section not in config:
            raise ConfigError(f"config file {path} has no '{section}' section")
    if "model_config" not in config.model or "arch" not in config.model:
        raise ConfigError(f"config file {path}: 'model' needs 'model_config' and 'arch'")
    add_default_keys(config)            # init_from_checkpoint, distill, ... (DEFAULT_KEYS)
    apply_overrides(config, overrides or {})
    sync_document_columns(config)        # the datasets' columns follow use_eod_attn_mask_compression
    sync_dataset_tasks(config)
    sync_quant_section(config)
    check_lr_schedule(config)
    check_keys(config)
    check_config_values(config)          # out-of-range numbers, named by their YAML path
    return config


def check_lr_schedule(config: MindFormerConfig) -> None:
    """MindFormers 1.9.0's WarmUpStableDecayLR divides by the warmup length: a warmup_ratio that
    rounds to 0 steps (int(total_steps * ratio)) gives a NaN learning rate at step 0, and one NaN
    step turns every weight NaN. Refuse it here with the numbers."""
    lr = config.get("lr_schedule") or {}
    if lr.get("type") != "WarmUpStableDecayLR":
        return
    total, ratio = lr.get("total_steps"), lr.get("warmup_ratio")
    if ratio and isinstance(total, int) and total > 0 and int(total * ratio) == 0:
        raise ConfigError(f"lr_schedule: warmup_ratio={ratio} x total_steps={total} rounds to 0 warmup steps, "
                          "which makes WarmUpStableDecayLR return NaN; raise warmup_ratio or total_steps, "
                          "or set warmup_steps >= 1")


def sync_dataset_tasks(config: MindFormerConfig) -> None:
    """`train_dataset_task.dataset_config: *train_dataset` is one section under two names in the
    YAML; after loading they are copies, so make overrides of `train_dataset` reach the task too."""
    for name in ("train_dataset", "eval_dataset"):
        task = config.get(f"{name}_task")
        if task is not None and config.get(name) is not None:
            task.dataset_config = config[name]
