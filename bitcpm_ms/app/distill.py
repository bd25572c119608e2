"""The YAML `distill:` section and the teacher it names.

    distill:
      teacher_config: output/fp_run/config_resolved.json   # a run config (YAML or a run's JSON)
      # teacher_model_config: {hidden_size: 512, ...}      # ... or the teacher's model_config inline
      teacher_checkpoint: output/fp_run                     # a .ckpt file or a run's output dir
      temperature: 1.0
      alpha: 0.5                                            # loss = (1 - alpha) CE + alpha KD

The teacher is a BitCPMForCausalLM built from its own model_config (full precision unless that
config enables QAT), which may be larger than the student. It must share the student's vocabulary
(distillation compares logits token by token): a different `vocab_size`, or a different tokenizer
file where both configs name one, is refused with the teacher's name. Its checkpoint must fit its
config (names and shapes, `checkpoints.load_weights`). It sees the student's batch and sequence,
and the student's documents (`use_eod_attn_mask_compression` is taken from the student).
"""
import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from typing import Optional

import yaml

from ..errors import CheckpointError, ConfigError
from ..fileio import plain

# the teacher reads the student's batches: their shape, and their documents (packed-document masking)
FIXED_FROM_STUDENT = ("batch_size", "seq_length", "use_eod_attn_mask_compression")


@dataclass
class DistillConfig:
    teacher_config: str = ""
    teacher_model_config: Optional[dict] = None
    teacher_checkpoint: str = ""
    temperature: float = 1.0
    alpha: float = 0.5
    enabled: bool = True

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"distill.enabled must be true or false, got {self.enabled!r}")
        if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
                or not self.temperature > 0:
            raise ConfigError(f"distill.temperature must be a positive number, got {self.temperature!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 <= self.alpha <= 1:
            raise ConfigError(f"distill.alpha (weight of the KD term) must be in [0, 1], got {self.alpha!r}")
        self.temperature, self.alpha = float(self.temperature), float(self.alpha)
        if not self.enabled:
            return
        if not self.teacher_checkpoint:
            raise ConfigError("distill.teacher_checkpoint is empty: give the teacher's .ckpt file or run directory")
        if bool(self.teacher_config) == bool(self.teacher_model_config):
            raise ConfigError("distill: give exactly one of teacher_config (a run's YAML/JSON config) "
                              "and teacher_model_config (the teacher's model_config inline)")

    @classmethod
    def from_section(cls, section) -> Optional["DistillConfig"]:
        """None when the section is absent, empty or `enabled: false`; unknown keys are errors."""
        if not section:
            return None
        d = dict(section)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in the distill section: {unknown}; known keys: {sorted(known)}")
        if d.get("teacher_model_config") is not None:
            d["teacher_model_config"] = plain(d["teacher_model_config"])
        cfg = cls(**d)
        return cfg if cfg.enabled else None

    def to_dict(self) -> dict:
        return asdict(self)


def _read_run_config(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"distill.teacher_config: file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            # JSON (a run's config_resolved.json) through json: YAML 1.1 reads 1e-05 as a string
            data = json.load(f) if path.endswith(".json") else yaml.safe_load(f)
    except (OSError, ValueError, yaml.YAMLError) as err:
        raise ConfigError(f"distill.teacher_config {path} is not valid YAML/JSON: {err}") from None
    mc = ((data or {}).get("model") or {}).get("model_config")
    if not isinstance(mc, dict):
        raise ConfigError(f"distill.teacher_config {path} has no model.model_config section")
    return data


def _tokenizer_file(run_config: dict) -> Optional[str]:
    path = (((run_config or {}).get("processor") or {}).get("tokenizer") or {}).get("vocab_file")
    if path and os.path.isdir(path):              # an HF tokenizer directory: its SentencePiece model
        path = os.path.join(path, "tokenizer.model")
    return path if path and os.path.isfile(path) else None


def _sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def teacher_model_config(dcfg: DistillConfig, student_config) -> dict:
    """The teacher's model_config (a plain dict), checked against the student's vocabulary and
    tokenizer; batch_size and seq_length are the student's."""
    student_mc = student_config.model.model_config
    if dcfg.teacher_config:
        run_config = _read_run_config(dcfg.teacher_config)
        tmc, name = dict(run_config["model"]["model_config"]), f"teacher {dcfg.teacher_config}"
        t_tok, s_tok = _tokenizer_file(run_config), _tokenizer_file(plain(student_config))
        if t_tok and s_tok and _sha256(t_tok) != _sha256(s_tok):
            raise ConfigError(f"distill: {name} uses tokenizer {t_tok}, the student {s_tok} (different files): "
                              "distillation on logits needs the same tokenizer and vocabulary")
    else:
        tmc, name = dict(dcfg.teacher_model_config), "teacher (distill.teacher_model_config)"
    if tmc.get("vocab_size") is None:
        raise ConfigError(f"distill: {name} has no vocab_size")
    if int(tmc["vocab_size"]) != int(student_mc.vocab_size):
        raise ConfigError(f"distill: {name} has vocab_size {tmc['vocab_size']}, the student {student_mc.vocab_size}: "
                          "distillation on logits needs the same tokenizer and vocabulary")
    tmc.setdefault("type", "BitCPMConfig")
    tmc.pop("checkpoint_name_or_path", None)
    tmc["disable_lazy_inline"] = True       # see train_network.build_train_network
    for key in FIXED_FROM_STUDENT:
        tmc[key] = student_mc.get(key)
    return tmc


def build_teacher(dcfg: DistillConfig, student_config, default_args: dict):
    """(teacher network with its checkpoint loaded, checkpoint file)."""
    from mindformers.models import build_network
    from mindformers.tools.register import MindFormerConfig

    from ..training.checkpoint_loading import load_weights, verified_checkpoint, verify_once_per_node
    tmc = teacher_model_config(dcfg, student_config)
    try:
        teacher = build_network(MindFormerConfig(model_config=tmc, arch={"type": "BitCPMForCausalLM"}),
                                default_args=dict(default_args, batch_size=tmc["batch_size"]))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"distill: cannot build the teacher from its model_config: {err}") from None
    try:
        ckpt = verified_checkpoint(dcfg.teacher_checkpoint, verify_once_per_node)   # every rank builds a teacher
        load_weights(teacher, ckpt, verify=None)
    except CheckpointError as err:
        raise CheckpointError(f"distill teacher: {err}") from None
    return teacher, ckpt
