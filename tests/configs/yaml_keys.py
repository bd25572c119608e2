"""Which keys of a training YAML MindFormers 1.9 / MindSpore 2.9 read, and which nobody reads.

A misspelt or outdated key in a MindFormers YAML is usually not an error: the model config keeps
unknown keys as attributes nobody looks at, registered classes swallow them in `**kwargs`, and
top-level keys outside MindFormers' template only produce a log warning
(`ConfigTemplate.apply_template`, mindformers/tools/register/template.py). `ignored_keys(config)`
lists every key that neither MindFormers/MindSpore nor bitcpm-ms reads, using the readers' own
definitions: the template classes, MindSpore's `set_context` / `set_auto_parallel_context` tables,
and the constructor signatures of the classes the YAML names. tests/configs/test_yaml_keys.py
requires the list to be empty for every shipped YAML.
"""
import inspect
from typing import Dict, Iterable, List

# Top-level keys read by bitcpm-ms itself (not by MindFormers), with their readers.
BITCPM_TOP_LEVEL_KEYS: Dict[str, str] = {
    "quant": "QuantConfig (app/config.sync_quant_section copies it to model.model_config.qat_config)",
    "data": "dataset preparation (data/config.py, app/train.ensure_prepared_data)",
    "eval_after_train": "app/runner.run",
    "init_from_checkpoint": "weights-only start of QAT from a full-precision checkpoint (recipe)",
    "require_init_checkpoint": "refuse a random-init QAT start (recipe)",
    "allow_random_init": "override of require_init_checkpoint (recipe)",
    "distill": "distillation settings (recipe)",
}
# Read from any `type:` section by MindFormerRegister.get_instance_from_cfg (register.py:361).
_REGISTRY_KEYS = {"type", "auto_register"}
_TEMPLATE_STRICT = ("parallel_config", "recompute_config", "runner_config", "moe_config", "swap_config",
                    "monitor_config")
_STRATEGY_CKPT_KEYS = {"load_file", "save_file", "only_trainable_params"}
_PARALLEL_OPTIMIZER_KEYS = {"gradient_accumulation_shard", "parallel_optimizer_threshold",
                            "optimizer_weight_shard_size", "optimizer_level"}


def _template():
    from mindformers.tools.register.template import CONFIG_NAME_TO_CLASS
    return CONFIG_NAME_TO_CLASS


def top_level_keys_read_by_mindformers() -> set:
    """Template sections, the general keys (GeneralConfig) and MindFormers' context keys."""
    from mindformers.core.config_args import MFContextConfig
    tmpl = _template()
    return (set(tmpl) - {"general_config"}) | set(tmpl["general_config"].keys()) | \
        set(MFContextConfig._support_kwargs)


def parallel_keys() -> set:
    """`parallel:` goes to mindspore.set_auto_parallel_context (MindFormers pops dataset_strategy)."""
    from mindspore.parallel._auto_parallel_context import _set_auto_parallel_context_func_map
    return set(_set_auto_parallel_context_func_map)


def context_key_is_read(key: str) -> bool:
    """`context:` keys: MindFormers' own, else mindspore.set_context's lookup (mindspore/context.py)."""
    from mindspore import context as msc
    from mindformers.core.config_args import MFContextConfig
    ctx = msc._context()
    return (key in MFContextConfig._support_kwargs or key in ctx.setters or hasattr(ctx, key)
            or (key in msc.ms_ctx_param.__members__ and not key.startswith("_")))


def named_arguments(cls) -> set:
    """Named constructor arguments (of __init__, or of __new__ for factory classes such as AdamW)."""
    names = set()
    for fn in (cls.__init__, getattr(cls, "__new__", None)):
        try:
            params = inspect.signature(fn).parameters.values()
        except (TypeError, ValueError):
            continue
        names |= {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                  and p.name not in ("self", "cls")}
    return names


def _registered(module_type: str, name: str):
    from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
    from bitcpm_ms import models, training  # noqa: F401  (register bitcpm-ms's classes)
    try:
        return MindFormerRegister.get_cls(getattr(MindFormerModuleType, module_type), name)
    except (ValueError, KeyError):
        return None


def _unread(section: dict, read: Iterable[str], where: str) -> List[str]:
    read = set(read)
    return [f"{where}.{k}" for k in section if k not in read]


def _typed_section(section, module_type: str, where: str) -> List[str]:
    """A `type:` section: its keys must be named arguments of the registered class."""
    if not isinstance(section, dict) or "type" not in section:
        return []
    cls = _registered(module_type, section["type"])
    if cls is None:
        return [f"{where}.type ({section['type']!r} is not registered as {module_type})"]
    return _unread(section, named_arguments(cls) | _REGISTRY_KEYS, where)


def model_config_keys() -> set:
    from mindformers.models.llama.llama_config import LlamaConfig
    from bitcpm_ms.models.bitcpm_config import BitCPMConfig
    return named_arguments(LlamaConfig) | named_arguments(BitCPMConfig) | _REGISTRY_KEYS


def ignored_keys(config: dict) -> List[str]:
    """Dotted names of the keys of `config` (a loaded YAML) that nothing reads."""
    out = _unread(config, top_level_keys_read_by_mindformers() | set(BITCPM_TOP_LEVEL_KEYS), "<top>")
    tmpl = _template()
    for name in _TEMPLATE_STRICT:
        if isinstance(config.get(name), dict):
            out += _unread(config[name], tmpl[name].keys(), name)
    par = config.get("parallel") or {}
    out += _unread(par, parallel_keys(), "parallel")
    out += _unread(par.get("strategy_ckpt_config") or {}, _STRATEGY_CKPT_KEYS, "parallel.strategy_ckpt_config")
    out += _unread(par.get("parallel_optimizer_config") or {}, _PARALLEL_OPTIMIZER_KEYS,
                   "parallel.parallel_optimizer_config")
    out += [f"context.{k}" for k in (config.get("context") or {}) if not context_key_is_read(k)]
    model = config.get("model") or {}
    out += _unread(model, ("model_config", "arch"), "model")
    out += _unread(model.get("model_config") or {}, model_config_keys(), "model.model_config")
    out += _typed_section(model.get("arch"), "MODELS", "model.arch")
    out += _unread(config.get("trainer") or {}, ("type", "model_name"), "trainer")
    out += _typed_section(config.get("optimizer"), "OPTIMIZER", "optimizer")
    out += _typed_section(config.get("lr_schedule"), "LR", "lr_schedule")
    out += _typed_section(config.get("runner_wrapper"), "WRAPPER", "runner_wrapper")
    for i, cb in enumerate(config.get("callbacks") or []):
        out += _typed_section(cb, "CALLBACK", f"callbacks.{i}")
    out += _dataset_keys(config)
    return out


def _dataset_keys(config: dict) -> List[str]:
    """train/eval datasets: the dataset task class's arguments; data_loader: the loader's arguments
    (MindFormers turns `dataset_dir` into the file list)."""
    out = []
    for name in ("train_dataset", "eval_dataset"):
        section, task = config.get(name), config.get(f"{name}_task") or {}
        if not isinstance(section, dict):
            continue
        out += _unread(task, _REGISTRY_KEYS | {"dataset_config"}, f"{name}_task")
        cls = _registered("DATASET", task.get("type", "")) if task.get("type") else None
        if cls is not None:
            out += _unread(section, named_arguments(cls), name)
        loader = section.get("data_loader") or {}
        loader_cls = _registered("DATASET_LOADER", loader.get("type", "")) if loader.get("type") else None
        if loader_cls is not None:
            out += _unread(loader, named_arguments(loader_cls) | _REGISTRY_KEYS | {"dataset_dir"},
                           f"{name}.data_loader")
    return out
