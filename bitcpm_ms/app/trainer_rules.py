"""Decisions MindFormers' Trainer takes from the config that bitcpm-ms needs before the Trainer runs.

The Trainer settles these in `BaseTrainer.set_config` (mindformers 1.9.0, trainer/base_trainer.py
`_check_grad_accumulation_steps`, ~301-334), i.e. inside `trainer.train()`. bitcpm-ms builds the
network itself when it loads `init_from_checkpoint` or distils (`train_network.py`), and configures
its metrics callback (`train.py`), both before that point, so it applies the same rules here. They
read the auto-parallel context `build_context` has set (parallel mode, pipeline stages).
"""
import mindspore as ms

SEMI_AUTO_MODES = ("semi_auto_parallel", "auto_parallel")


def pipeline_stages() -> int:
    return int(ms.get_auto_parallel_context("pipeline_stages") or 1)


def effective_gradient_accumulation(config) -> int:
    """gradient_accumulation_steps as the Trainer will run it: reset to 1 under pipeline parallelism
    (semi/auto, pp > 1) and outside semi/auto parallel (stand-alone, data parallel)."""
    steps = int((config.get("runner_config") or {}).get("gradient_accumulation_steps") or 1)
    if ms.get_auto_parallel_context("parallel_mode") not in SEMI_AUTO_MODES or pipeline_stages() > 1:
        return 1
    return steps


def lazy_inline_disabled(config) -> bool:
    """MindFormers turns `@lazy_inline` off when it brings nothing: gradient accumulation 1 and no
    pipeline ("The Lazy Inline compilation acceleration feature only works with using
    gradient_accumulation_steps > 1 when not in pipeline parallel mode"; it sets
    model_config.disable_lazy_inline = True). Left on there, the CPU data-parallel graph fails to
    compile ("Input[0] must be a Primitive ValueNode")."""
    return effective_gradient_accumulation(config) == 1 and pipeline_stages() == 1


def apply_lazy_inline_rule(config) -> bool:
    """Set model_config.disable_lazy_inline as the Trainer would; returns whether it is disabled.
    Only ever switches it off (a YAML's own `disable_lazy_inline: True` stays)."""
    if lazy_inline_disabled(config):
        config.model.model_config.disable_lazy_inline = True
    return bool(config.model.model_config.get("disable_lazy_inline", False))
