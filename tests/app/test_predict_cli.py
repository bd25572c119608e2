"""`--run_mode predict` with the generation flags: a prompt file in batches, sampling, packed kernels,
tokens/s on stderr; bad flag values stop before MindSpore is imported."""
import os

import mindspore as ms
import pytest

from bitcpm_ms.app.artifacts import build_model
from bitcpm_ms.app.config import load_config

from ..helpers import SMALL_MODEL, TINY_YAML, run_cli


@pytest.mark.parametrize("flags, message", [
    (["--temperature", "-1"], "--temperature must be >= 0"),
    (["--top_p", "0"], "--top_p must be in (0, 1]"),
    (["--top_p", "1.5"], "--top_p must be in (0, 1]"),
    (["--max_new_tokens", "0"], "--max_new_tokens must be >= 1, got 0"),
    (["--packed", "maybe"], "expected true or false"),
    (["--prompt_file", "/nonexistent/prompts.txt"], "does not exist"),
    (["--decode_steps", "0"], "--decode_steps must be >= 1, got 0"),
    (["--decode_steps", "4"], "--decode_steps > 1 needs --packed true"),
    (["--head_dtype", "int4"], "invalid choice: 'int4'"),
])
def test_bad_predict_flags_are_named_errors(flags, message):
    res = run_cli(["--config", TINY_YAML, "--run_mode", "predict", *flags], timeout=60)
    assert res.returncode == 2 and message in res.stderr, res.stderr[-2000:]


def test_prompt_file_sampling_packed(small_dataset, tmp_path):
    ds, _, _, _ = small_dataset
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    ms.save_checkpoint(build_model(load_config(TINY_YAML, ov)), str(tmp_path / "model.ckpt"))
    (tmp_path / "prompts.txt").write_text("The horse\n\nA word\nOf the\n", encoding="utf-8")
    args = ["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
            "--load_checkpoint", str(tmp_path / "model.ckpt"), "--processor.tokenizer.vocab_file",
            str(ds / "tokenizer.model"), *SMALL_MODEL, "--prompt_file", str(tmp_path / "prompts.txt"),
            "--predict_batch_size", "3", "--max_new_tokens", "6", "--temperature", "0.7", "--top_p", "0.7",
            "--seed", "3", "--packed", "true"]
    res = run_cli(args)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    lines = [line for line in res.stdout.splitlines() if line.startswith("[")]
    assert [line[:4] for line in lines] == ["[0] ", "[1] ", "[2] "]
    assert lines[0].startswith("[0] The horse") and lines[2].startswith("[2] Of the")
    stats = [line for line in res.stderr.splitlines() if line.startswith("prefill:")]
    assert stats and "tok/s" in stats[0] and "packed" in stats[0] and "seed 3" in stats[0]
    assert os.path.isdir(tmp_path / "out")


@pytest.mark.slow
def test_export_decode_graphs_then_predict_from_them(small_dataset, tmp_path):
    """export_packed(decode_graphs=...) (bitcpm-export --decode_graphs) writes the MindIR decoding graphs;
    predict --decode_graphs uses them and prints the same greedy text as the in-process packed model."""
    from bitcpm_ms.app.export import export_packed
    ds, _, _, _ = small_dataset
    ov = {SMALL_MODEL[i][2:]: SMALL_MODEL[i + 1] for i in range(0, len(SMALL_MODEL), 2)}
    ov = {k: (int(v) if v.isdigit() else v) for k, v in ov.items()}
    ms.save_checkpoint(build_model(load_config(TINY_YAML, ov)), str(tmp_path / "model.ckpt"))
    s = export_packed(load_config(TINY_YAML, ov), str(tmp_path / "model.ckpt"), str(tmp_path / "export"),
                      mindir=False, decode_graphs=(16, None))
    assert s["decode_graphs"]["prompt_length"] == 16 and s["decode_graphs"]["cache_length"] == 64
    assert sorted(os.listdir(tmp_path / "export" / "decode")) == ["decode_graphs.json", "decode_step.mindir",
                                                                  "prefill.mindir"]
    common = ["--config", TINY_YAML, "--run_mode", "predict", "--output_dir", str(tmp_path / "out"),
              "--load_checkpoint", str(tmp_path / "model.ckpt"), "--processor.tokenizer.vocab_file",
              str(ds / "tokenizer.model"), *SMALL_MODEL, "--prompt", "The horse", "--max_new_tokens", "8"]
    packed = run_cli(common + ["--packed", "true"])
    graphs = run_cli(common + ["--decode_graphs", str(tmp_path / "export" / "decode")])
    assert packed.returncode == 0 and graphs.returncode == 0, packed.stderr[-2000:] + graphs.stderr[-2000:]
    assert graphs.stdout.strip().splitlines()[-1] == packed.stdout.strip().splitlines()[-1]
    assert "MindIR" in graphs.stderr
