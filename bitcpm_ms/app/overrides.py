"""Command-line overrides: `--a.b.c value` -> {"a.b.c": value}, parsed like MindFormers'
run_mindformer.py: values are YAML scalars (`false`, `64`, `null`, `1e-3`, `[1, 2]`).

Kept apart from `config.py` (which imports MindFormers) so a CLI can parse its arguments, and
refuse bad ones, before the slow imports.
"""
from typing import Dict, List, Tuple

import yaml

from ..errors import ConfigError


def parse_overrides(tokens: List[str]) -> Dict[str, object]:
    """['--quant.group_size', '64', '--quant.enabled=false'] -> {'quant.group_size': 64, ...}."""
    out, i = {}, 0
    while i < len(tokens):
        tok = tokens[i]
        if not tok.startswith("--") or len(tok) <= 2:
            raise ConfigError(f"unexpected argument {tok!r}: overrides look like --section.key value")
        key = tok[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(tokens):
                raise ConfigError(f"override --{key} has no value")
            raw = tokens[i + 1]
            i += 2
        out[key] = parse_value(raw)
    return out


def parse_value(raw: str):
    """YAML scalar parsing, plus plain floats like 1e-3 that YAML 1.1 reads as strings."""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def split_argv(argv: List[str], known: Tuple[str, ...]) -> Tuple[List[str], List[str]]:
    """Split argv into the runner's own flags and dotted overrides (anything with a '.')."""
    own, rest, i = [], [], 0
    while i < len(argv):
        tok = argv[i]
        name = tok[2:].split("=", 1)[0] if tok.startswith("--") else None
        target = own if (name in known or name in ("h", "help") or tok in ("-h",)) else rest
        target.append(tok)
        if name is not None and "=" not in tok and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            target.append(argv[i + 1])
            i += 1
        i += 1
    return own, rest
