"""The `bitcpm` model's arguments (lm-eval's `--model_args key=value,...`), checked before anything loads.

lm-eval parses `--model_args` into a dict (numbers become ints, `true`/`false` bools) and adds its own
`--batch_size`, `--max_batch_size` and `--device`. Every bad value is a ConfigError that names the key,
so `bitcpm-eval` ends with one `error: ...` line (docs/errors.md) instead of a traceback deep in a
model load.
"""
from dataclasses import dataclass
from typing import Optional

from ..errors import ConfigError

KEYS = ("config", "checkpoint", "packed", "batch_size", "max_length")
# passed by lm-eval itself and ignored: the model runs where the run config's context.device_target says
# (lm-eval's CLI fills --device with "cuda:0" when it is not given, so a value cannot be refused)
LM_EVAL_KEYS = ("max_batch_size", "device")
DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class ModelArgs:
    config: str                        # run config: the YAML a run trained with, or its config_resolved.json
    checkpoint: Optional[str]          # .ckpt file or run directory (default: the config's own output_dir)
    packed: bool = False               # convert the ternary layers to 2-bit packed kernels (convert_model)
    batch_size: int = DEFAULT_BATCH_SIZE
    max_length: Optional[int] = None   # context window; default: the config's seq_length


def _positive_int(key, value) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"model_args {key}={value!r} must be a positive integer")
    try:
        number = int(str(value).strip())
    except ValueError:
        hint = " ('auto' batch sizes are not supported: give a number)" if str(value).startswith("auto") else ""
        raise ConfigError(f"model_args {key}={value!r} must be a positive integer{hint}") from None
    if number < 1:
        raise ConfigError(f"model_args {key}={value!r} must be a positive integer")
    return number


def _bool(key, value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no"):
        raise ConfigError(f"model_args {key}={value!r} must be true or false")
    return text in ("true", "1", "yes")


def check_model_args(**kwargs) -> ModelArgs:
    """ModelArgs from lm-eval's keyword arguments; unknown keys and bad values are named ConfigErrors."""
    unknown = sorted(k for k in kwargs if k not in KEYS + LM_EVAL_KEYS)
    if unknown:
        raise ConfigError(f"model_args: unknown key(s) {unknown}; the bitcpm model takes {list(KEYS)}")
    config = kwargs.get("config")
    if not config:
        raise ConfigError("model_args: config=PATH is required (the run's YAML or config_resolved.json)")
    batch = kwargs.get("batch_size")
    max_length = kwargs.get("max_length")
    return ModelArgs(config=str(config), checkpoint=str(kwargs["checkpoint"]) if kwargs.get("checkpoint") else None,
                     packed=_bool("packed", kwargs.get("packed", False)),
                     batch_size=DEFAULT_BATCH_SIZE if batch in (None, "") else _positive_int("batch_size", batch),
                     max_length=None if max_length in (None, "") else _positive_int("max_length", max_length))
