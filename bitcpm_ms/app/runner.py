"""What `bitcpm-train` / `run/run_bitcpm.py` does once its config is loaded: set up MindSpore,
resolve the run's artifacts once, then train, evaluate or sample.
"""
import os
import sys

import mindspore as ms
from mindformers.core.context import build_context

from .. import models as _models          # noqa: F401  (registers BitCPMConfig / BitCPMForCausalLM)
from .. import training as _training      # noqa: F401  (registers the wrapper and the callbacks)
from ..data import mf_tokenizer as _tok    # noqa: F401  (registers BitCPMTokenizer)
from ..errors import ConfigError
from .artifacts import resolve
from .predict import run_predict
from .console import log_dir
from .evaluate import run_eval
from .runlock import RunLock
from .train import ensure_prepared_data, train


def _check_graph_mode():
    if ms.get_context("mode") != ms.GRAPH_MODE:
        raise RuntimeError("MindSpore is not in GRAPH_MODE after build_context (context.mode must be 0); "
                           "PyNative training is ~100x slower on CPU")


def is_rank0() -> bool:
    return int(os.environ.get("RANK_ID", "0") or 0) == 0


def run(config, args) -> int:
    mode = config.run_mode
    if mode not in ("train", "eval", "predict"):
        raise ConfigError(f"run_mode must be train, eval or predict, got {mode!r}")
    config.output_dir = os.path.abspath(config.output_dir)
    os.makedirs(config.output_dir, exist_ok=True)
    if mode == "train":          # one training run per output_dir (rank 0 holds it for an msrun job)
        with RunLock(config.output_dir, enabled=is_rank0() and os.environ.get("MS_ROLE") != "MS_SCHED"):
            return _run(config, args, mode)
    return _run(config, args, mode)


def _run(config, args, mode) -> int:
    build_context(config)
    _check_graph_mode()
    if is_rank0():
        print(f"{mode}: {config.output_dir} (MindFormers log: {log_dir()}/rank_*/info.log)", flush=True)
    if mode == "train":
        ensure_prepared_data(config)
        art = resolve(config)
        code = train(config, verify_data=getattr(args, "verify_data", False))
        if code or not (config.get("eval_after_train") and is_rank0()):
            return code
        if art.dataset_dir is None:
            print(f"warning: eval_after_train skipped: {art.dataset_problem}", file=sys.stderr, flush=True)
            return 0
        return run_eval(config, art, checkpoint=config.output_dir)
    art = resolve(config)
    if mode == "eval":
        return run_eval(config, art, max_batches=args.eval_max_batches)
    return run_predict(config, art, prompt=args.prompt, max_new_tokens=args.max_new_tokens, args=args)
