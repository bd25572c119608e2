"""The network MindFormers' Trainer trains, and where its first weights come from.

Top-level YAML keys (defaults added to every config by `app/config.py` DEFAULT_KEYS, so the flags work
with any YAML):

    init_from_checkpoint: ''        # start from these weights: a .ckpt file or a run's output dir
    require_init_checkpoint: False  # a QAT run without an init checkpoint refuses to start ...
    allow_random_init: False        # ... unless this is true (--allow_random_init true)
    distill: null                   # the distillation section (app/distill.py)

`init_from_checkpoint` loads **weights only** (the latent full-precision weights of our runs, or a
checkpoint converted with `run/convert_hf.py from_hf`): every model parameter must be in the file
with its shape (`checkpoints.load_weights`, a CheckpointError names the parameter). Under msrun the
file's sha256 is checked by one rank per node (`checkpoints.verify_once_per_node`), and each rank
reads only the model's parameters, one at a time (`training/checkpoint_reader.py`). Optimizer
moments, `global_step` and `skipped_steps` are not read: the optimizer is fresh, the run starts at
step 0 and the schedule's warmup runs again from 0 (re-warmup). `load_checkpoint` +
`--resume_training` is the other thing: continuing a run, optimizer and step included. When a run
resumes, its own checkpoint wins and `init_from_checkpoint` is not applied.

Plain configs are untouched: the Trainer builds the network from `model:` as before. With an init
checkpoint or a `distill:` section, this module builds it the way the Trainer would (same seed,
same default arguments, lazy inline off where the Trainer turns it off) and hands the instance to
`Trainer(model=...)`.
"""
import copy
import os
import sys

from ..errors import ConfigError
from .distill import DistillConfig, build_teacher
from .trainer_rules import apply_lazy_inline_rule

def check_init_policy(config) -> None:
    """`require_init_checkpoint: True` (the production YAMLs): ternary QAT from random weights is
    almost always a mistake (the report starts every model from its full-precision checkpoint)."""
    quant = config.get("quant") or {}
    if not (config.get("require_init_checkpoint") and quant.get("enabled", True)):
        return
    if config.get("init_from_checkpoint") or config.get("load_checkpoint") or config.get("resume_training") \
            or config.get("allow_random_init"):
        return
    raise ConfigError("this config sets require_init_checkpoint: True and quant.enabled, but no init checkpoint "
                      "is given: pass --init_from_checkpoint PATH (a full-precision checkpoint, e.g. from "
                      "run/convert_hf.py from_hf) or, to train ternary weights from random init on purpose, "
                      "--allow_random_init true")


def _trainer_default_args(config) -> dict:
    """What MindFormers' Trainer passes to build_network (base_trainer.training_process)."""
    from mindformers.core.parallel_config import build_parallel_config
    cfg = copy.deepcopy(config)
    build_parallel_config(cfg)
    return {"parallel_config": cfg.parallel_config, "moe_config": cfg.moe_config,
            "dataset_config": cfg.train_dataset, "calculate_per_token_loss": False,
            "batch_size": config.runner_config.batch_size}


def _log(msg: str) -> None:
    if int(os.environ.get("RANK_ID", "0") or 0) == 0:
        print(msg, file=sys.stdout, flush=True)


def build_train_network(config):
    """None for a plain run (the Trainer builds the network), else the network to train: the
    student (a BitCPMDistillForCausalLM when distilling) with the init checkpoint's weights."""
    dcfg = DistillConfig.from_section(config.get("distill"))
    init = config.get("init_from_checkpoint") or ""
    if config.get("resume_training") and init:
        _log(f"init_from_checkpoint {init} not applied: this run resumes from its own checkpoint")
        init = ""
    if not init and dcfg is None:
        return None
    from mindformers.models import build_network
    from mindformers.models.build_config import build_model_config
    from mindformers.trainer.utils import set_seed

    from ..training.distill import BitCPMDistillForCausalLM
    from ..training.checkpoint_loading import load_weights, verified_checkpoint, verify_once_per_node
    # a bad path or a corrupt file fails before any building; hashed by one rank per node
    init_file = verified_checkpoint(init, verify_once_per_node) if init else None
    # The Trainer switches lazy inline off for pipeline 1 without gradient accumulation, but only for
    # networks it builds itself (trainer_rules.py); this one is built here, so apply its rule first.
    apply_lazy_inline_rule(config)
    default_args = _trainer_default_args(config)
    teacher = None
    if dcfg is not None:
        teacher, teacher_ckpt = build_teacher(dcfg, config, default_args)
    set_seed(config.seed or 0)              # as the Trainer does before building: same random init
    if teacher is None:
        network = build_network(config.model, default_args=dict(default_args))
    else:
        args = dict(default_args)
        model_config = build_model_config(config.model.model_config, default_args=dict(args))
        for key, value in args.items():
            setattr(model_config, key, value)
        # MindFormers' @lazy_inline (on in any parallel mode) compiles LlamaForCausalLM as a reusable
        # sub-graph; with the teacher called inside the student's graph, the CPU backend of the
        # data-parallel run refuses the nested call ("Input[0] must be a Primitive ValueNode").
        model_config.disable_lazy_inline = True
        network = BitCPMDistillForCausalLM(model_config, teacher, dcfg.temperature, dcfg.alpha)
        n = sum(int(p.size) for p in teacher.get_parameters())
        _log(f"distill: teacher {n / 1e6:.2f}M parameters from {teacher_ckpt} (frozen, not saved), "
             f"T={dcfg.temperature}, loss = {1 - dcfg.alpha:g} CE + {dcfg.alpha:g} KD")
    if init_file:
        load_weights(network, init_file, verify=None)        # verified above; read one parameter at a time
        _log(f"init: weights from {init_file} (weights only: fresh optimizer, step 0, warmup from 0)")
    return network

