"""BitCPMCheckpointMonitor: MindFormers' CheckpointMonitor, made crash-safe.

What MindFormers 1.9.0's CheckpointMonitor does that loses or corrupts work (issue 13):
* MindSpore writes `NAME.tmp` and renames it without fsync; a kill leaves the .tmp forever, a
  power loss may leave a renamed but empty file;
* with `keep_checkpoint_max: N` it deletes the oldest file *before* writing the new one, so with
  N = 1 a kill during the save leaves no checkpoint at all;
* files carry no checksum, so a truncated or bit-flipped newest checkpoint is resumed silently;
* after a resume it names files by the steps of the new run under a new prefix (`..._rank_0_1-1_15`
  holding step 30) and never prunes the old prefix's files.

This callback keeps its YAML arguments (prefix, save_checkpoint_steps, keep_checkpoint_max,
integrated_save, async_save) and instead: writes through `checkpoint_files.publish_checkpoint`
(temporary name, fsync, sha256 sidecar, rename), prunes only after the new checkpoint is in place,
names every file by the run's global step under one prefix, restores `skipped_steps` when
resuming, and on SIGTERM / SIGINT saves and stops after the step at which the ranks agree on the
signal (every step in one process; under msrun every `preemption_check_steps` steps and at every
checkpoint step, `preemption`).
"""
import json
import os
import sys

import mindspore as ms
from mindspore import Tensor
from mindspore.train.callback import Callback
from mindformers.tools.logger import logger
from mindformers.tools.register import MindFormerModuleType, MindFormerRegister
from mindformers.tools.utils import get_output_root_path

from ..errors import ConfigError
from ..fileio import atomic_json
from ..parallel.agreement import gather_ints, world
from . import preemption
from .checkpoint_files import (checkpoint_name, prune_checkpoints, publish_checkpoint, read_sidecar,
                               remove_dead_writes)
from .metrics import _scalar, restored_step_offset

# parameters MindFormers' CheckpointMonitor never saves (gradient accumulators, caches, monitors)
_NOT_SAVED = ("accu_grads", "fi_parameter", "zeros_k_pe", "zeros_k_nope", "zeros_value_states", "_cache",
              "_device_local_norm", "_device_local_loss", "expert_load", "max_logits_val")


def _saved(name: str) -> bool:
    return all(not name.startswith(item) and item not in name for item in _NOT_SAVED)


def append_event(output_dir: str, record: dict) -> None:
    """Append one event line ({"event": ...}) to OUTPUT_DIR/metrics.jsonl (rank 0 writes it)."""
    if world()[0] != 0 or not output_dir:
        return
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def read_skipped_steps(ckpt: str) -> int:
    """The `skipped_steps` a checkpoint was saved with (sidecar first, else the file itself)."""
    info = read_sidecar(ckpt)
    if info is not None and "skipped_steps" in info:
        return int(info["skipped_steps"])
    params = ms.load_checkpoint(ckpt, choice_func=lambda name: name == "skipped_steps")
    return int(_scalar(params["skipped_steps"])) if "skipped_steps" in params else 0


@MindFormerRegister.register(MindFormerModuleType.CALLBACK)
class BitCPMCheckpointMonitor(Callback):
    """Crash-safe checkpoints with optimizer state (see the module docstring).

    Args:
        prefix: file name prefix; files are `<prefix>_rank_<r>-<epoch>_<global step>.ckpt`.
        directory: the run's output_dir (files go to `directory/checkpoint/rank_<r>/`); default:
            MindFormers' output path, as CheckpointMonitor.
        save_checkpoint_steps: save every N global steps (and always after the last step).
        keep_checkpoint_max: keep the newest N checkpoints of this rank; older ones are deleted
            only after a new one is complete. 0 keeps all.
        integrated_save: merge sliced parameters when saving (auto-parallel); as CheckpointMonitor.
        async_save: accepted for YAML compatibility; saving is always synchronous, because a
            checkpoint is published only once complete and hashed.
        preemption_check_steps: under msrun, the ranks agree whether any of them received
            SIGTERM / SIGINT every N steps and at every checkpoint step (the agreement is an
            AllGather plus a host sync; one process checks its own flag every step). Training
            therefore stops at most N steps after a signal; lower N when N steps plus a
            checkpoint save do not fit in the cluster's grace period before SIGKILL.
        resume_checkpoint: the checkpoint this run resumes from (set by bitcpm-train), whose
            skipped_steps is restored into the train-step wrapper.
        run_info: extra fields for every sidecar (e.g. the config fingerprint, set by bitcpm-train).
    """

    def __init__(self, prefix="CKP", directory=None, save_checkpoint_steps=1, keep_checkpoint_max=5,
                 integrated_save=True, async_save=False, preemption_check_steps=10, resume_checkpoint=None,
                 run_info=None, **kwargs):
        super().__init__()
        unsupported = sorted(k for k, v in kwargs.items() if v not in (None, False, 0, "", "ckpt"))
        if unsupported:
            raise ConfigError(f"BitCPMCheckpointMonitor: unsupported argument(s) {unsupported}; supported: prefix, "
                              "save_checkpoint_steps, keep_checkpoint_max, integrated_save, async_save, "
                              "preemption_check_steps")
        if not isinstance(prefix, str) or not prefix or "/" in prefix:
            raise ConfigError(f"BitCPMCheckpointMonitor.prefix must be a non-empty name without '/', got {prefix!r}")
        for name, value, low in (("save_checkpoint_steps", save_checkpoint_steps, 1),
                                 ("keep_checkpoint_max", keep_checkpoint_max, 0),
                                 ("preemption_check_steps", preemption_check_steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"BitCPMCheckpointMonitor.{name} must be an integer >= {low}, got {value!r}")
        self.prefix = prefix
        self.directory = directory
        self.save_steps = int(save_checkpoint_steps)
        self.check_steps = int(preemption_check_steps)
        self._last_check = 0
        self.keep = int(keep_checkpoint_max)
        self.integrated_save = bool(integrated_save)
        if async_save:
            logger.warning("BitCPMCheckpointMonitor: async_save is ignored; checkpoints are saved synchronously "
                           "so that each one is published only when complete and hashed")
        self.resume_checkpoint = resume_checkpoint or None
        self.run_info = dict(run_info or {})
        self.rank, self.world_size = 0, 1
        self.rank_dir = None
        self._offset = 0
        self._last_saved_step = None
        self.last_checkpoint = None

    # ------------------------------------------------------------------ helpers
    def _output_dir(self):
        if self.directory:
            return os.path.abspath(self.directory)
        return get_output_root_path()

    def _restore_skipped_steps(self, network) -> None:
        if not self.resume_checkpoint or getattr(network, "skipped_steps", None) is None:
            return
        skipped = read_skipped_steps(self.resume_checkpoint)
        network.skipped_steps.set_data(Tensor(skipped, network.skipped_steps.dtype))

    def _save(self, cb_params, step: int) -> str:
        network = cb_params.train_network
        optimizer = cb_params.optimizer if cb_params.optimizer is not None else getattr(network, "optimizer", None)
        global_step = int(_scalar(optimizer.global_step)) if optimizer is not None else step
        skipped = getattr(network, "skipped_steps", None)
        skipped = int(_scalar(skipped)) if skipped is not None else 0
        epoch = int(cb_params.cur_epoch_num)
        append = {"epoch_num": epoch, "step_num": step}
        outputs = cb_params.net_outputs
        if isinstance(outputs, (tuple, list)) and len(outputs) >= 3:
            append["loss_scale"] = outputs[2]
        name = checkpoint_name(self.prefix, self.rank, epoch, step)
        info = dict(self.run_info, step=step, global_step=global_step, skipped_steps=skipped, epoch=epoch,
                    rank=self.rank, world_size=self.world_size, prefix=self.prefix)

        def save(tmp_path):
            ms.save_checkpoint(network, tmp_path, self.integrated_save, False, dict(append), choice_func=_saved)

        path = publish_checkpoint(save, self.rank_dir, name, info)
        # MindFormers' own resume-by-meta record, for run_mindformer.py users
        atomic_json({"last_epoch": epoch, "last_step": step, "last_ckpt_file": name},
                    os.path.join(self.rank_dir, "meta.json"))
        removed = prune_checkpoints(self.rank_dir, self.keep, protect=path)
        logger.info("saved checkpoint %s (step %d)%s", path, step,
                    f"; removed {[os.path.basename(p) for p in removed]}" if removed else "")
        self._last_saved_step, self.last_checkpoint = step, path
        return path

    # ------------------------------------------------------------------ callbacks
    def on_train_begin(self, run_context):
        cb_params = run_context.original_args()
        self.rank, self.world_size = world()
        self.rank_dir = os.path.join(self._output_dir(), "checkpoint", f"rank_{self.rank}")
        removed = remove_dead_writes(self.rank_dir)
        if removed:
            print(f"note: removed leftovers of an interrupted save in {self.rank_dir}: {removed}",
                  file=sys.stderr, flush=True)
        self._restore_skipped_steps(cb_params.train_network)
        self._offset = restored_step_offset(cb_params)
        self._last_saved_step = None
        self._last_check = self._offset
        preemption.install()

    def _stop_check_due(self, step: int) -> bool:
        """Whether the ranks exchange their preemption flags after `step`: every step in one process
        (no communication), else at every checkpoint step and whenever `check_steps` steps have
        passed since the previous exchange, so no two exchanges are more than N steps apart. It
        depends only on the step, which all ranks share, so all ranks call the collective at the
        same steps; counting from the last exchange (not `step % N`) keeps the interval when sink
        mode reports several steps at once."""
        if self.world_size == 1 or step % self.save_steps == 0 or step - self._last_check >= self.check_steps:
            self._last_check = step
            return True
        return False

    def on_train_step_end(self, run_context):
        cb_params = run_context.original_args()
        step = self._offset + int(cb_params.cur_step_num)
        if self._stop_check_due(step) and preemption.stop_agreed():
            path = self.last_checkpoint if self._last_saved_step == step else self._save(cb_params, step)
            steps = gather_ints([step])[:, 0]           # every rank has published its file
            if len(set(steps.tolist())) != 1:
                raise RuntimeError(f"ranks stopped at different steps {steps.tolist()}")
            preemption.mark_stopped(step, path)
            info = preemption.preempted()
            append_event(self._output_dir(), {"event": "preempted", "signal": info["signal"], "after_step": step,
                                              "checkpoint": path})
            run_context.request_stop()
            return
        if step % self.save_steps == 0:
            self._save(cb_params, step)

    def on_train_end(self, run_context):
        cb_params = run_context.original_args()
        step = self._offset + int(cb_params.cur_step_num)
        try:
            if int(cb_params.cur_step_num) > 0 and self._last_saved_step != step:
                self._save(cb_params, step)
        finally:
            preemption.uninstall()
