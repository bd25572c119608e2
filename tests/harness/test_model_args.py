"""Bad `--model_args` give one named error; `bitcpm-eval` runs a local lm-eval task end to end from a run's
config and checkpoint; `lm_eval.simple_evaluate(model="bitcpm")` finds the model by name."""
import json
import os
import subprocess
import sys

import mindspore as ms
import pytest
from lm_eval.api.registry import get_model

import bitcpm_ms  # noqa: F401  (registers the model name)
from bitcpm_ms.errors import BitCPMError, CheckpointError, ConfigError
from bitcpm_ms.harness.model_args import check_model_args
from bitcpm_ms.testing import REPO, random_bitcpm, write_config

from .conftest import MODEL, QUANT


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, small_dataset):
    """A run config on the prepared test dataset (its tokenizer) and a checkpoint of a random ternary model."""
    d = tmp_path_factory.mktemp("run")
    model = {k: v for k, v in MODEL.items() if k not in ("scale_emb", "scale_depth")}
    cfg = write_config(str(d / "config.yaml"), str(small_dataset[0] / "train"), str(d), batch_size=2, model=model,
                       group_size=QUANT["group_size"])
    import yaml
    with open(cfg, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    doc["processor"]["tokenizer"]["vocab_file"] = str(small_dataset[0] / "tokenizer.model")
    with open(cfg, "w", encoding="utf-8") as f:
        yaml.safe_dump(doc, f, sort_keys=False)
    net = random_bitcpm(model, QUANT, seed=9)
    ms.save_checkpoint(net, str(d / "model.ckpt"))
    return d, cfg


@pytest.mark.parametrize("args,message", [
    (dict(config="c.yaml", batch_size="eight"), r"model_args batch_size='eight' must be a positive integer"),
    (dict(config="c.yaml", batch_size="auto"), r"'auto' batch sizes are not supported"),
    (dict(config="c.yaml", batch_size=0), r"batch_size=0 must be a positive integer"),
    (dict(config="c.yaml", chekpoint="x"), r"unknown key\(s\) \['chekpoint'\]; the bitcpm model takes \['config'"),
    (dict(checkpoint="x"), r"config=PATH is required"),
    (dict(config="c.yaml", packed="maybe"), r"packed='maybe' must be true or false"),
    (dict(config="c.yaml", max_length="long"), r"max_length='long' must be a positive integer"),
])
def test_bad_values_are_named(args, message):
    with pytest.raises(ConfigError, match=message):
        check_model_args(**args)


def test_lm_eval_builds_the_model_by_name_and_names_a_missing_checkpoint(run_dir):
    d, cfg = run_dir
    cls = get_model("bitcpm")
    assert cls.__name__ == "BitCPMLM"
    with pytest.raises(CheckpointError, match=r"checkpoint path .*nowhere does not exist"):
        cls.create_from_arg_string(f"config={cfg},checkpoint={d / 'nowhere'}")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['batchsize'\]"):
        cls.create_from_arg_string(f"config={cfg},batchsize=4")
    tiny_vocab = str(cfg).replace("config.yaml", "tiny_vocab.yaml")
    with open(cfg, encoding="utf-8") as f, open(tiny_vocab, "w", encoding="utf-8") as g:
        g.write(f.read().replace("vocab_size: 512", "vocab_size: 256"))
    with pytest.raises(ConfigError, match=r"tokenizer .* has 512 ids, more than the model's vocab_size 256"):
        cls.create_from_arg_string(f"config={tiny_vocab},checkpoint={d / 'model.ckpt'}")
    lm = cls.create_from_arg_string(f"config={cfg},checkpoint={d / 'model.ckpt'},max_length=16",
                                    {"batch_size": 3})
    assert (lm.max_length, lm.batch_size) == (16, 3)


def test_bitcpm_eval_runs_a_local_task_end_to_end(run_dir, mc_task, tmp_path):
    d, cfg = run_dir
    include, docs = mc_task
    env = dict(os.environ, PYTHONPATH=REPO, GLOG_v="3")
    base = [sys.executable, os.path.join(REPO, "run", "eval_harness.py"), "--tasks", "tiny_mc",
            "--include_path", str(include), "--output_path", str(tmp_path / "out"), "--log_samples"]
    proc = subprocess.run(base + ["--model_args", f"config={cfg},checkpoint={d / 'model.ckpt'},packed=true",
                                  "--batch_size", "4", "--limit", "4"],
                          capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = [os.path.join(r, f) for r, _, fs in os.walk(tmp_path / "out") for f in fs if f.startswith("results")]
    assert len(results) == 1
    res = json.load(open(results[0]))
    assert res["results"]["tiny_mc"]["acc,none"] is not None and res["config"]["model"] == "bitcpm"
    assert res["config"]["model_args"]["packed"] is True
    bad = subprocess.run(base + ["--model_args", f"config={cfg},checkpoint={d / 'model.ckpt'},batch_size=x"],
                         capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    lines = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert lines == ["error: model_args batch_size='x' must be a positive integer"]


def test_every_error_derives_from_the_root():
    assert issubclass(ConfigError, BitCPMError) and issubclass(CheckpointError, BitCPMError)
