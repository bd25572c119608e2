"""When the ranks exchange their preemption flags: every step in one process, under msrun at
checkpoint steps and at most `preemption_check_steps` steps apart (the monitor's step logic with the
exchange and the save replaced; the exchange itself runs under msrun in
tests/distributed/test_resilience_msrun.py)."""
import types

import numpy as np
import pytest

from bitcpm_ms.errors import ConfigError
from bitcpm_ms.training import checkpointing, preemption
from bitcpm_ms.training.checkpointing import BitCPMCheckpointMonitor


class Run:
    """Drives a monitor through steps; `signal_at`: the step after which this rank got SIGTERM."""

    def __init__(self, monkeypatch, tmp_path, world_size, signal_at=None, offset=0, sink=1, **monitor_args):
        self.checks, self.saves, self.stopped = [], [], None
        self.signal_at, self.step = signal_at, 0
        monkeypatch.setattr(checkpointing, "world", lambda: (0, world_size))
        monkeypatch.setattr(checkpointing, "gather_ints", lambda values: np.array([list(values)] * world_size))
        monkeypatch.setattr(checkpointing, "restored_step_offset", lambda cb: offset)
        monkeypatch.setattr(preemption, "stop_agreed", self._stop_agreed)
        monkeypatch.setattr(BitCPMCheckpointMonitor, "_save", lambda mon, cb, step: self.saves.append(step) or "c")
        self.monitor = BitCPMCheckpointMonitor(prefix="t", directory=str(tmp_path), **monitor_args)
        self.cb = types.SimpleNamespace(train_network=None, cur_step_num=0, cur_epoch_num=1)
        self.context = types.SimpleNamespace(original_args=lambda: self.cb, request_stop=self._request_stop)
        self.offset, self.sink = offset, sink

    def _stop_agreed(self):
        self.checks.append(self.offset + self.cb.cur_step_num)
        return self.signal_at is not None and self.offset + self.cb.cur_step_num >= self.signal_at

    def _request_stop(self):
        self.stopped = self.offset + self.cb.cur_step_num

    def train(self, steps):
        self.monitor.on_train_begin(self.context)
        try:
            while self.cb.cur_step_num < steps and self.stopped is None:
                self.cb.cur_step_num += self.sink
                self.monitor.on_train_step_end(self.context)
        finally:
            preemption.uninstall()
        return self


def test_one_process_checks_its_flag_every_step(monkeypatch, tmp_path):
    run = Run(monkeypatch, tmp_path, 1, save_checkpoint_steps=100, preemption_check_steps=10).train(7)
    assert run.checks == [1, 2, 3, 4, 5, 6, 7]


def test_under_msrun_every_n_steps_and_at_checkpoint_steps(monkeypatch, tmp_path):
    run = Run(monkeypatch, tmp_path, 2, save_checkpoint_steps=6, preemption_check_steps=4).train(20)
    assert run.checks == [4, 6, 10, 12, 16, 18]          # never more than 4 steps apart
    assert run.saves == [6, 12, 18]


def test_the_default_interval_is_10(monkeypatch, tmp_path):
    run = Run(monkeypatch, tmp_path, 2, save_checkpoint_steps=1000).train(35)
    assert run.checks == [10, 20, 30]


def test_a_signal_stops_training_at_the_next_check_with_a_checkpoint(monkeypatch, tmp_path):
    run = Run(monkeypatch, tmp_path, 2, signal_at=5, save_checkpoint_steps=100, preemption_check_steps=4).train(20)
    assert run.stopped == 8 and run.saves == [8]
    assert preemption.preempted()["step"] == 8


def test_the_interval_counts_from_a_resumed_step_and_through_sink_steps(monkeypatch, tmp_path):
    resumed = Run(monkeypatch, tmp_path, 2, offset=33, save_checkpoint_steps=1000, preemption_check_steps=10)
    assert resumed.train(25).checks == [43, 53]
    sink = Run(monkeypatch, tmp_path, 2, sink=3, save_checkpoint_steps=1000, preemption_check_steps=10)
    assert sink.train(30).checks == [12, 24]          # steps arrive 3 at a time: 3, 6, ..., 30


@pytest.mark.parametrize("value", [0, -1, 2.5, True, "5"])
def test_a_bad_interval_is_named(value):
    with pytest.raises(ConfigError, match="preemption_check_steps must be an integer >= 1"):
        BitCPMCheckpointMonitor(preemption_check_steps=value)
