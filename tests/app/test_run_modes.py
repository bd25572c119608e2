"""End-to-end run modes on a small generated corpus: prepare on first use -> train -> eval -> predict."""
import json
import os

import pytest

from ..data.corpora import mixed_docs
from ..helpers import SMALL_MODEL, TINY_YAML, read_metrics, run_cli, step_records


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    d = tmp_path_factory.mktemp("modes")
    (d / "corpus.txt").write_text("\n\n".join(mixed_docs(1500, seed=3)) + "\n", encoding="utf-8")
    return d


def _data_args(d):
    ds = d / "prepared"
    return ["--data.input", str(d / "corpus.txt"), "--data.output_dir", str(ds), "--data.num_workers", "0",
            "--data.tokenizer.vocab_size", "512", "--data.validation_fraction", "0.05",
            "--train_dataset.data_loader.dataset_dir", str(ds / "train"),
            "--eval_dataset.data_loader.dataset_dir", str(ds / "validation"),
            "--processor.tokenizer.vocab_file", str(ds / "tokenizer.model"),
            "--lr_schedule.total_steps", "30", *SMALL_MODEL]


@pytest.fixture(scope="module")
def trained(workdir):
    """One 30-step training run (data prepared on first use, eval after training) shared by the tests
    below; a failed run fails every test that needs it instead of skipping them. Returns the output
    directory, the CLI result and eval.json as written by the training run."""
    out = workdir / "out"
    res = run_cli(["--config", TINY_YAML, "--output_dir", str(out), "--max_steps", "30", *_data_args(workdir)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return out, res, json.load(open(out / "eval.json"))


def test_train_prepares_data_then_evaluates(workdir, trained):
    out, res, ev = trained
    assert "preparing dataset" in res.stdout
    assert os.path.isfile(workdir / "prepared" / "manifest.json")
    steps = step_records(read_metrics(out))
    assert steps[30]["loss"] < steps[1]["loss"]
    assert ev["split"] == "validation" and ev["tokens"] > 0
    assert 0 < ev["bits_per_byte"] < 10 and ev["perplexity"] > 1
    assert ev["quant"]["enabled"] is True and ev["checkpoint"].endswith(".ckpt")


def test_eval_mode_and_predict_mode(workdir, trained):
    out = trained[0]
    if (out / "eval.json").exists():
        (out / "eval.json").unlink()
    res = run_cli(["--config", TINY_YAML, "--run_mode", "eval", "--output_dir", str(out), *_data_args(workdir)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "bits/byte" in res.stdout and (out / "eval.json").exists()
    res = run_cli(["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(out), "--prompt", "The",
                   "--max_new_tokens", "5", *_data_args(workdir)])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1].startswith("The")


def test_eval_without_checkpoint_is_a_clear_error(workdir, tmp_path):
    res = run_cli(["--config", TINY_YAML, "--run_mode", "eval", "--output_dir", str(tmp_path / "empty"),
                   *_data_args(workdir)])
    assert res.returncode == 2 and "no .ckpt file" in res.stderr
