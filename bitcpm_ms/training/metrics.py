"""Training metrics the user sees: a console line with progress and one JSON object per line.

Logged every `log_interval` steps: step, loss, learning rate, global grad norm, tokens/s,
model TFLOP/s (per device, formula in `bitcpm_ms.models.flops.train_flops_per_token`),
skipped (non-finite) steps, step time, and for a ternary model its health (zero codes, codes changed
since the last log, latent weights near a rounding boundary: `ternary_health.py`). Throughput is
measured between consecutive logged steps (wall clock, data loading included); the first step,
which includes graph compilation, is reported separately as `first_step_s` and excluded from
throughput.

One rank writes (`metrics_rank`): the one holding the valid loss. With pipeline parallelism only
the last stage computes the loss (the other stages return 0 or a partial value), and the
pipeline wrapper returns the *sum* over the micro-batches; MindFormers' MFLossMonitor therefore
reports the last stage's loss divided by micro_batch_num (and by the gradient-accumulation /
micro-batch-interleave counts, whose wrappers sum too; mindformers/core/callback/callback.py
`_fix_loss_for_parallel`). This callback does the same (`loss_divisor`).
"""
import json
import math
import os
import sys
import time

import numpy as np
import mindspore as ms
from mindspore.train.callback import Callback
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister

from ..models.flops import train_flops_per_token
from .throughput import tokens_per_step
from .distill import loss_terms
from .ternary_health import DEFAULT_SAMPLE, TernaryHealth


def _scalar(x):
    if x is None:
        return None
    if hasattr(x, "asnumpy"):
        x = x.asnumpy()
    return float(np.asarray(x).reshape(-1)[0])


def _find_model_config(cell):
    """The config of the first PreTrainedModel-like cell (has .config.seq_length) in a network."""
    for _, sub in cell.cells_and_names():
        cfg = getattr(sub, "config", None)
        if cfg is not None and hasattr(cfg, "seq_length") and hasattr(cfg, "hidden_size"):
            return cfg
    return None


def restored_step_offset(cb_params) -> int:
    """Steps done before this run: the optimizer's global_step (restored on resume) plus the
    non-finite steps the wrapper skipped (`skipped_steps`, restored by BitCPMCheckpointMonitor),
    minus MindSpore's cur_step_num, which restarts from 0 in a resumed run."""
    net = cb_params.train_network
    opt = getattr(net, "optimizer", None)
    step = getattr(opt, "global_step", None)
    if step is None:
        return 0
    skipped = getattr(net, "skipped_steps", None)
    return int(_scalar(step)) + (int(_scalar(skipped)) if skipped is not None else 0) - int(cb_params.cur_step_num)


def metrics_rank(world_size: int, pipeline_stages: int, pipeline_scheduler=None) -> int:
    """The rank that holds the valid loss and writes metrics: the first rank of the last pipeline
    stage (MindSpore gives stage s the ranks s*N/P .. (s+1)*N/P - 1); rank 0 without pipeline, and
    with the zero_bubble_v schedule, whose V layout puts the last layer on stage 0 (MindFormers:
    "When zero_bubble_v is enabled, loss is valid only on rank 0")."""
    world_size, pipeline_stages = int(world_size), int(pipeline_stages or 1)
    if pipeline_stages <= 1 or pipeline_scheduler == "zero_bubble_v" or world_size % pipeline_stages:
        return 0            # (a world that does not split into the stages runs no pipeline at all)
    return world_size - world_size // pipeline_stages


def loss_divisor(pipeline_stages: int, micro_batch_num: int = 1, gradient_accumulation_steps: int = 1,
                 micro_batch_interleave_num: int = 1, calculate_per_token_loss: bool = False) -> int:
    """What the step's loss output is divided by to give the mean loss, as MFLossMonitor does
    (`_fix_loss_for_parallel`): micro_batch_num under pipeline parallelism, the interleave count,
    the gradient-accumulation steps (the last two as the Trainer runs them: see
    app/trainer_rules.py); per-token loss (a ratio already) is not divided by the first and last."""
    divisor = 1
    if int(pipeline_stages or 1) > 1 and not calculate_per_token_loss:
        divisor *= int(micro_batch_num or 1)
    if int(micro_batch_interleave_num or 1) > 1:
        divisor *= int(micro_batch_interleave_num)
    if int(gradient_accumulation_steps or 1) > 1 and not calculate_per_token_loss:
        divisor *= int(gradient_accumulation_steps)
    return divisor


def _pipeline_context():
    stages = int(ms.get_auto_parallel_context("pipeline_stages") or 1)
    try:
        scheduler = ms.get_auto_parallel_context("pipeline_scheduler")
    except (ValueError, KeyError):
        scheduler = None
    return stages, scheduler


def _fmt_time(seconds):
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class BitCPMMetricsMonitor(Callback):
    """Console + `metrics.jsonl` logging of loss, lr, grad norm, tokens/s and TFLOP/s.

    Args:
        log_interval: log every N optimizer steps.
        output_dir: where `metrics.jsonl` goes (only `metrics_rank` writes it and the console line).
        total_steps: for the progress display; default: epochs x steps per epoch.
        device_num: number of devices, default MS_WORKER_NUM (tokens/s counts the global batch,
            `throughput.py`; TFLOP/s is per device).
        micro_batch_num, gradient_accumulation_steps, micro_batch_interleave_num,
            calculate_per_token_loss: the run's values for `loss_divisor` (`app/train.py` fills them
            from the config; the pipeline stage count comes from the auto-parallel context). Left
            out (MindFormers' own run_mindformer.py builds this callback from the YAML alone), the
            first two come from the train network at train begin: MindFormers' pipeline /
            accumulation wrapper (MFPipelineWithLossScaleCell) sums its loss over `micro_size`.
        ternary_health: log zero_code_frac, code_change_frac, near_boundary_frac of the ternary
            layers (`ternary_health.py`; nothing for a full-precision model); ternary_health_sample:
            weights read per layer per log.
    """

    def __init__(self, log_interval=1, output_dir="./output", total_steps=None, device_num=None, rank_id=None,
                 micro_batch_num=None, gradient_accumulation_steps=None, micro_batch_interleave_num=1,
                 calculate_per_token_loss=None, ternary_health=True, ternary_health_sample=DEFAULT_SAMPLE,
                 **kwargs):
        super().__init__()
        if int(log_interval) < 1:
            raise ValueError(f"BitCPMMetricsMonitor.log_interval must be >= 1, got {log_interval}")
        self.log_interval = int(log_interval)
        self.output_dir = output_dir
        self.total_steps = total_steps
        self.device_num = int(device_num or os.environ.get("MS_WORKER_NUM", 1) or 1)
        self.rank_id = int(rank_id if rank_id is not None else os.environ.get("RANK_ID", 0) or 0)
        self._loss_args = dict(micro_batch_num=micro_batch_num, gradient_accumulation_steps=gradient_accumulation_steps,
                               micro_batch_interleave_num=micro_batch_interleave_num,
                               calculate_per_token_loss=calculate_per_token_loss)
        self._configure_pipeline()
        self._health = TernaryHealth(ternary_health_sample) if ternary_health else None
        self.path = os.path.join(output_dir, "metrics.jsonl")
        self._flops_per_token = None
        self._t_last = None
        self._step_last = None
        self._step_prev = 0
        self._offset = 0
        self._t_begin = None
        self._tokens_seen = 0
        self._step_tokens = None

    # ------------------------------------------------------------------ helpers
    def _configure_pipeline(self, network=None):
        """Writer rank and loss divisor from the auto-parallel context (read again at train begin:
        build_context sets it before the Trainer builds the callbacks, tests may set it later)."""
        stages, scheduler = _pipeline_context()
        self.metrics_rank = metrics_rank(self.device_num, stages, scheduler)
        args = dict(self._loss_args)
        micro_size = getattr(network, "micro_size", None)     # MFPipelineWithLossScaleCell's count
        if args["micro_batch_num"] is None:
            args["micro_batch_num"] = micro_size if micro_size and stages > 1 else 1
        if args["gradient_accumulation_steps"] is None:
            args["gradient_accumulation_steps"] = micro_size if micro_size and stages == 1 else 1
        if args["calculate_per_token_loss"] is None:
            args["calculate_per_token_loss"] = bool(getattr(network, "calculate_per_token_loss", False))
        self.loss_divisor = loss_divisor(stages, **args)

    @property
    def is_writer(self) -> bool:
        return self.rank_id == self.metrics_rank

    def _write(self, record):
        if not self.is_writer:
            return
        os.makedirs(self.output_dir, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _tokens_per_step(self, cb_params):
        """Global batch x sequence length (`throughput.py`: sink mode, full_batch, data parallel)."""
        if self._step_tokens is None:
            self._step_tokens = tokens_per_step(cb_params, _find_model_config(cb_params.train_network),
                                                self.device_num)
        return self._step_tokens

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(self, run_context):
        cb_params = run_context.original_args()
        self._configure_pipeline(cb_params.train_network)
        cfg = _find_model_config(cb_params.train_network)
        if cfg is not None:
            self._flops_per_token = train_flops_per_token(cfg)
        if self.total_steps is None:
            self.total_steps = int(cb_params.epoch_num) * int(cb_params.batch_num)
        self._t_begin = time.time()
        self._offset = restored_step_offset(cb_params)
        self._step_last = self._step_prev = self._offset + int(cb_params.cur_step_num)
        self._write({"event": "train_begin", "time": self._t_begin, "initial_step": self._step_last,
                     "total_steps": self.total_steps, "device_num": self.device_num,
                     "flops_per_token": self._flops_per_token, "metrics_rank": self.metrics_rank,
                     "loss_divisor": self.loss_divisor})

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        step = self._offset + int(cb_params.cur_step_num)
        now = time.time()
        tokens_per_step = self._tokens_per_step(cb_params)
        if tokens_per_step:
            self._tokens_seen += tokens_per_step * (step - self._step_prev)
        self._step_prev = step
        if self._t_last is None:               # first step: graph compilation + one step
            first = now - self._t_begin
            self._t_last, self._step_last = now, step
            self._log(cb_params, step, None, tokens_per_step, first_step_s=first)
            return
        if step % self.log_interval and step != self.total_steps:
            return
        dt = (now - self._t_last) / max(step - self._step_last, 1)
        self._t_last, self._step_last = now, step
        self._log(cb_params, step, dt, tokens_per_step)

    def _log(self, cb_params, step, step_time, tokens_per_step, first_step_s=None):
        outputs = cb_params.net_outputs
        if isinstance(outputs, (tuple, list)):
            loss, overflow, _, lr, gnorm = (list(outputs) + [None] * 5)[:5]   # (.., loss scale, ..)
        else:
            loss, overflow, lr, gnorm = outputs, None, None, None
        network = cb_params.train_network
        skipped = getattr(network, "skipped_steps", None)
        loss = _scalar(loss)
        if loss is not None and self.loss_divisor != 1:
            loss = loss / self.loss_divisor          # pipeline / accumulation wrappers sum micro-batch losses
        rec = {"step": step, "loss": loss, "lr": _scalar(lr), "grad_norm": _scalar(gnorm),
               "overflow": bool(_scalar(overflow)) if overflow is not None else None,
               "skipped_steps": int(_scalar(skipped)) if skipped is not None else None,
               "tokens_seen": self._tokens_seen, "time": time.time()}
        rec.update(loss_terms(network))       # ce_loss / kd_loss when distilling (training/distill.py)
        if self._health is not None and self.is_writer:
            rec.update(self._health.measure(network))
        if first_step_s is not None:
            rec["first_step_s"] = round(first_step_s, 3)
        if step_time:
            rec["step_time_s"] = round(step_time, 4)
            if tokens_per_step:
                rec["tokens_per_s"] = round(tokens_per_step / step_time, 1)
                if self._flops_per_token:
                    rec["tflops_per_device"] = round(
                        self._flops_per_token * tokens_per_step / step_time / self.device_num / 1e12, 5)
        if rec["loss"] is not None and not math.isfinite(rec["loss"]):
            rec["loss"] = str(rec["loss"])          # keep the JSON valid
        self._write(rec)
        if self.is_writer:
            print(self._console_line(rec), file=sys.stdout, flush=True)

    def _console_line(self, rec):
        total = self.total_steps or 0
        pct = f" ({100.0 * rec['step'] / total:5.1f}%)" if total else ""
        parts = [f"step {rec['step']}/{total}{pct}"]
        if rec["loss"] is not None:
            parts.append(f"loss {rec['loss']:.4f}" if isinstance(rec["loss"], float) else f"loss {rec['loss']}")
        if "ce_loss" in rec:
            parts.append(f"ce {rec['ce_loss']:.4f}" + (f" kd {rec['kd_loss']:.4f}" if "kd_loss" in rec else ""))
        if rec["lr"] is not None:
            parts.append(f"lr {rec['lr']:.3e}")
        if rec["grad_norm"] is not None:
            parts.append(f"grad_norm {rec['grad_norm']:.3f}")
        if "tokens_per_s" in rec:
            parts.append(f"{rec['tokens_per_s']:,.0f} tok/s")
        if "tflops_per_device" in rec:
            parts.append(f"{rec['tflops_per_device']:.4f} TFLOP/s")
        if "zero_code_frac" in rec:
            change = rec["code_change_frac"]
            parts.append(f"zeros {100 * rec['zero_code_frac']:.1f}%"
                         + (f" changed {100 * change:.2f}%" if change is not None else "")
                         + f" near-boundary {100 * rec['near_boundary_frac']:.1f}%")
        if rec.get("skipped_steps"):
            parts.append(f"skipped {rec['skipped_steps']}")
        if "first_step_s" in rec:
            parts.append(f"first step (incl. compile) {rec['first_step_s']:.1f}s")
        if rec.get("step_time_s") and total:
            parts.append(f"eta {_fmt_time((total - rec['step']) * rec['step_time_s'])}")
        return " | ".join(parts)

    def on_train_end(self, run_context):
        self._write({"event": "train_end", "time": time.time(),
                     "wall_s": round(time.time() - (self._t_begin or time.time()), 2)})


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class StopAtStep(Callback):
    """Stop training once the optimizer has taken `stop_step` steps in total (resumed runs count
    the steps of the run they resume, unlike MindFormers' TrainCallBack)."""

    def __init__(self, stop_step: int, **kwargs):
        super().__init__()
        if int(stop_step) < 1:
            raise ValueError(f"StopAtStep.stop_step must be >= 1, got {stop_step}")
        self.stop_step = int(stop_step)
        self._offset = 0

    def on_train_begin(self, run_context):
        self._offset = restored_step_offset(run_context.original_args())

    def on_train_step_end(self, run_context):
        if self._offset + int(run_context.original_args().cur_step_num) >= self.stop_step:
            run_context.request_stop()
