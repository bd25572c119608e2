"""The bad-input catalogue of docs/errors.md: every case ends with one `error: ...` line naming the
problem, exit status 2, no traceback, and nothing already written lost or half-written.

The cases run in one subprocess (`_catalogue_driver.py`: one import of MindSpore/MindFormers), each
through the command-line entry point a user calls."""
import json
import os
import subprocess
import sys

import pytest

from bitcpm_ms.testing import REPO

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_catalogue_driver.py")

CASES = {
    "model_vocab_smaller_than_data": r"has a 512-token vocabulary, larger than model.model_config.vocab_size 256",
    "model_seq_length_not_data_seq_length": r"has seq_length 32, the model model.model_config.seq_length 64",
    "raw_data_sample_length": r"training samples in .*raw hold 33 tokens, the model needs seq_length \+ 1 = 65",
    "document_masking_without_the_column": r"model.model_config.use_eod_attn_mask_compression is on, but the "
                                           r"training data .*raw has no actual_seq_len column",
    "actual_seq_len_not_increasing": r"training data .*bad_ends: actual_seq_len of sample 3: not increasing "
                                     r"at index 1 \(17 then 5\)",
    "actual_seq_len_beyond_seq_length": r"actual_seq_len of sample 3: value 40 at index 1 is beyond "
                                        r"seq_length 32",
    "truncated_shard": r"train shard .*shard_00001.mindrecord has [\d,]+ bytes, the manifest records [\d,]+ "
                       r"\(truncated or replaced\); prepare it again",
    "corrupt_shard": r"train shard .*shard_00001.mindrecord is corrupt or was modified: sha256",
    "missing_shard": r"train shard .*shard_00001.mindrecord listed in .*manifest.json is missing",
    "changed_corpus": r"the corpus changed after .*ds_stale was prepared: .*c.txt \([\d,]+ bytes, the manifest "
                      r"records [\d,]+\)",
    "verify_data_without_manifest": r"--verify_data: .*raw has no manifest.json",
    "empty_prompt": r"--prompt is empty",
    "max_new_tokens_zero": r"--max_new_tokens must be >= 1, got 0",
    "negative_learning_rate": r"lr_schedule.learning_rate must be > 0, got -0.001",
    "beta_not_below_one": r"optimizer.betas\[1\] must be < 1, got 1.0",
    "heads_do_not_divide_hidden": r"hidden_size 64 is not a multiple of num_heads 3",
    "keep_checkpoint_max_negative": r"callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max must be >= 0, got -1",
    "save_checkpoint_steps_zero": r"callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps must be >= 1, got 0",
    "unknown_checkpoint_monitor_argument": r"unknown argument\(s\) \['save_checkpoint_seconds'\]",
    "text_file_as_load_checkpoint": r"prepared.yaml is not a .ckpt file",
    "text_file_named_ckpt": r"cannot read checkpoint .*notes.ckpt \(17 bytes\): not a complete MindSpore checkpoint",
    "other_architecture_checkpoint": r"wide.ckpt is of another architecture: hidden_size 128 \(this config: 64\)",
    "other_vocabulary_checkpoint_without_sidecar": r"foreign.ckpt is of another architecture: "
                                                   r"model.tok_embeddings.embedding_weight has shape \(1000, 64\)",
    "resume_without_checkpoint": r"--resume_training: no checkpoint found under .*o10",
    "resume_only_truncated_checkpoints": r"no good checkpoint in .*rank_0 \(on every rank\): dp_rank_0-1_5.ckpt is "
                                         r"truncated: 100 of [\d,]+ bytes \(moved to dp_rank_0-1_5.ckpt.corrupt\)",
    "eval_only_corrupt_checkpoints": r"no good checkpoint in .*rank_0: every file with a sidecar failed verification",
    "output_dir_in_use": r"output_dir .*o12 is in use by another training run: pid \d+ on host ",
    "latin1_corpus": r"fewer than vocab_size 4096: the corpus is not UTF-8 .*iconv -f latin1 -t utf-8",
    "export_into_non_empty_dir": r"output directory .*export_out exists and is not empty",
}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    env = dict(os.environ, PYTHONUNBUFFERED="1", GLOG_v="3", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, DRIVER, str(root)], capture_output=True, text=True, timeout=900,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.load(open(root / "results.json"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_gives_one_named_error(results, case):
    import re
    res = results[case]
    lines = [line for line in res["stderr"].splitlines() if line.startswith("error: ")]
    assert res["rc"] == 2, res["stderr"][-3000:]
    assert len(lines) == 1 and "Traceback" not in res["stderr"], res["stderr"][-3000:]
    assert re.search(CASES[case], lines[0]), lines[0]
    assert not res.get("wrote_checkpoints"), "a refused run must not start writing checkpoints"


def test_nothing_already_written_is_lost(results):
    for case in ("output_dir_in_use", "export_into_non_empty_dir"):
        assert results[case]["after"] == results[case]["before"], case
    assert results["output_dir_in_use"]["after"]["metrics.jsonl"]            # the first run's file is untouched
    moved = results["resume_only_truncated_checkpoints"]                       # renamed aside, never deleted
    assert sorted(moved["after"].values()) == sorted(moved["before"].values())
    assert any(name.endswith(".ckpt.corrupt") for name in moved["after"])
    assert results["latin1_corpus"]["exists_after"] is False


def test_the_catalogue_documents_every_case():
    with open(os.path.join(REPO, "docs", "errors.md"), encoding="utf-8") as f:
        doc = f.read()
    missing = [case for case in CASES if f"test_bad_input_gives_one_named_error[{case}]" not in doc]
    assert not missing, missing
