"""bitcpm-ms in EleutherAI's lm-evaluation-harness: the model `bitcpm`, our task files, `bitcpm-eval`.

Retention in the report's terms (BitCPM-CANN Table 3: a ternary model's 11-task average over its
full-precision twin's) is measured with lm-eval, the field's harness, not a scorer of our own:

    import bitcpm_ms, lm_eval                   # importing bitcpm_ms registers the model name
    lm_eval.simple_evaluate(model="bitcpm", model_args="config=RUN/config_resolved.json,checkpoint=RUN",
                            tasks=["bitcpm_gcide_define"], task_manager=bitcpm_ms.harness.task_manager())

`register()` (bitcpm_ms.register_lm_eval_model, run when bitcpm_ms is imported) puts a lazy entry into
lm-eval's model registry: nothing of MindSpore is imported until lm-eval builds the model (`lm.py`).
`TASKS_DIR` holds the task YAML (the miniature GCIDE task, the `bitcpm_report` group); see docs/eval.md.
"""
import os

from .. import LM_EVAL_MODEL as MODEL_NAME, register_lm_eval_model as register  # noqa: F401

TASKS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tasks")


def task_manager(include_path=None, **kwargs):
    """lm-eval's TaskManager with our task directory (plus `include_path`, a path or a list)."""
    from lm_eval.tasks import TaskManager
    extra = [include_path] if isinstance(include_path, str) else list(include_path or [])
    return TaskManager(include_path=[TASKS_DIR] + extra, **kwargs)
