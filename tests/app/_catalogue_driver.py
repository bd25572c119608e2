"""Runs the bad-input cases of test_error_catalogue.py in one process: `python _catalogue_driver.py ROOT`
writes ROOT/results.json with, per case, the exit status, stderr, and the files of the directory the
case must leave alone (before and after), so the test can check that nothing was lost or half-written.

Every case calls a command-line entry point (`cli.train_main`, `prepare_main`, `export_main`) with the
arguments a user would type; none of them gets as far as training."""
import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys

import mindspore as ms
import numpy as np

from bitcpm_ms.app.cli import export_main, prepare_main, train_main
from bitcpm_ms.testing import SMALL_MODEL, TINY_YAML, make_mindrecord, write_config, write_token_rows
from bitcpm_ms.training.checkpoint_files import publish_checkpoint
from tests.data.corpora import mixed_docs

SMALL = ["--model.model_config.hidden_size", "64", "--model.model_config.num_layers", "1",
         "--model.model_config.seq_length", "32", "--model.model_config.vocab_size", "512",
         "--model.model_config.intermediate_size", "128", "--model.model_config.dim_model_base", "16",
         "--quant.group_size", "32"]


def snapshot(d):
    """{relative path: sha256} of every file under d (empty when d does not exist)."""
    out = {}
    for dirpath, _, files in os.walk(d):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def call(main, argv, watch=None):
    se = io.StringIO()
    before = snapshot(watch) if watch else {}
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(se):
        try:
            rc = main(argv)
        except SystemExit as e:                      # argparse
            rc = e.code
    return {"rc": rc, "stderr": se.getvalue(), "before": before, "after": snapshot(watch) if watch else {}}


def dummy_checkpoint(path, shapes):
    ms.save_checkpoint([{"name": n, "data": ms.Tensor(np.zeros(s, np.float32))} for n, s in shapes.items()], path)


def main(root):
    j = lambda *p: os.path.join(root, *p)                                       # noqa: E731
    os.makedirs(j("corpus"))
    with open(j("corpus", "c.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(mixed_docs(600, seed=2)) + "\n")
    # a prepared dataset (vocab 512, seq 32) and a config that trains on it
    assert prepare_main(["--config", TINY_YAML, "--input", j("corpus", "c.txt"), "--output_dir", j("ds"),
                         "--vocab_size", "512", "--seq_length", "32", "--num_workers", "0", "--shard_samples", "1024",
                         "--validation_fraction", "0.1", "--no_progress"]) == 0
    prepared = write_config(j("prepared.yaml"), j("ds", "train"), j("unused"), 4)
    raw = write_config(j("raw.yaml"), make_mindrecord(j("raw", "d.mindrecord"), 64, 32, 512), j("unused"), 4)
    cases = {}

    def train(case, cfg, out, *args, watch=None):
        had = os.path.exists(j(out, "checkpoint"))
        cases[case] = call(train_main, ["--config", cfg, "--output_dir", j(out), *map(str, args)], watch)
        cases[case]["wrote_checkpoints"] = not had and os.path.exists(j(out, "checkpoint"))

    train("model_vocab_smaller_than_data", prepared, "o1", "--model.model_config.vocab_size", 256,
          "--quant.group_size", 32)
    train("model_seq_length_not_data_seq_length", prepared, "o2", "--model.model_config.seq_length", 64)
    train("raw_data_sample_length", raw, "o3", "--model.model_config.seq_length", 64)
    # document masking: data without the actual_seq_len column, and a row of bad ends
    train("document_masking_without_the_column", raw, "o3d", "--model.model_config.use_eod_attn_mask_compression",
          "true")
    ends = np.tile(np.array([[5, 17, 32, 32]], np.int32), (64, 1))
    ends[3] = [17, 5, 32, 32]
    rows = np.random.default_rng(0).integers(3, 512, (64, 33)).astype(np.int32)
    bad = write_config(j("bad_ends.yaml"), os.path.dirname(write_token_rows(j("bad_ends", "d.mindrecord"), rows, ends)),
                       j("unused"), 4, documents=True)
    train("actual_seq_len_not_increasing", bad, "o3e")
    ends[3] = [5, 40, 32, 32]
    write_token_rows(j("bad_ends", "d.mindrecord"), rows, ends)
    train("actual_seq_len_beyond_seq_length", bad, "o3f")
    for case, how in (("truncated_shard", "truncate"), ("corrupt_shard", "flip"), ("missing_shard", "remove")):
        shutil.copytree(j("ds"), j(case))
        shard = j(case, "train", "shard_00001.mindrecord")
        if how == "truncate":
            os.truncate(shard, os.path.getsize(shard) // 2)
        elif how == "remove":
            os.remove(shard)
        else:
            st = os.stat(shard)
            with open(shard, "r+b") as f:
                f.seek(st.st_size // 2)
                f.write(b"\xde\xad\xbe\xef")
        train(case, prepared, "o4", "--train_dataset.data_loader.dataset_dir", j(case, "train"),
              *(["--verify_data"] if how == "flip" else []))
    # a corpus edited after its dataset was prepared (config with a data: section)
    shutil.copytree(j("ds"), j("ds_stale"))
    with open(j("corpus", "c.txt"), "a", encoding="utf-8") as f:
        f.write("\n\nAn edit made after preparation.\n")
    train("changed_corpus", TINY_YAML, "o5", *SMALL, "--data.input", j("corpus", "c.txt"), "--data.output_dir",
          j("ds_stale"), "--data.num_workers", 0, "--data.tokenizer.vocab_size", 512,
          "--train_dataset.data_loader.dataset_dir", j("ds_stale", "train"))
    train("verify_data_without_manifest", raw, "o6", "--verify_data")
    train("empty_prompt", prepared, "o7", "--run_mode", "predict", "--prompt", "")
    train("max_new_tokens_zero", prepared, "o7", "--run_mode", "predict", "--max_new_tokens", 0)
    train("negative_learning_rate", prepared, "o8", "--lr_schedule.learning_rate", -1e-3)
    train("beta_not_below_one", prepared, "o8", "--optimizer.betas", "[0.9, 1.0]")
    train("heads_do_not_divide_hidden", prepared, "o8", "--model.model_config.num_heads", 3)
    train("keep_checkpoint_max_negative", prepared, "o8", "--callbacks.BitCPMCheckpointMonitor.keep_checkpoint_max", -1)
    train("save_checkpoint_steps_zero", prepared, "o8", "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_steps", 0)
    train("unknown_checkpoint_monitor_argument", prepared, "o8",
          "--callbacks.BitCPMCheckpointMonitor.save_checkpoint_seconds", 60)
    train("text_file_as_load_checkpoint", prepared, "o9", "--load_checkpoint", prepared)
    with open(j("notes.ckpt"), "w") as f:
        f.write("not a checkpoint\n")
    train("text_file_named_ckpt", prepared, "o9", "--load_checkpoint", j("notes.ckpt"))
    # checkpoints of another architecture: one with a sidecar (hidden 128), one without (vocab 1000)
    from bitcpm_ms.app.config import load_config
    from bitcpm_ms.app.resume import run_info
    other = load_config(prepared, {"model.model_config.hidden_size": 128})
    os.makedirs(j("other"))
    publish_checkpoint(lambda p: dummy_checkpoint(p, {"w": (2, 2)}), j("other"), "wide.ckpt", run_info(other))
    train("other_architecture_checkpoint", prepared, "o9", "--load_checkpoint", j("other", "wide.ckpt"))
    dummy_checkpoint(j("other", "foreign.ckpt"), {"model.tok_embeddings.embedding_weight": (1000, 64),
                                                  "model.layers.0.attention.wq.weight": (64, 64)})
    train("other_vocabulary_checkpoint_without_sidecar", prepared, "o9", "--load_checkpoint", j("other", "foreign.ckpt"))
    train("resume_without_checkpoint", prepared, "o10", "--resume_training", "true")
    rank_dir = j("o11", "checkpoint", "rank_0")
    os.makedirs(rank_dir)
    bad = publish_checkpoint(lambda p: dummy_checkpoint(p, {"w": (64, 64)}), rank_dir, "dp_rank_0-1_5.ckpt",
                             {"step": 5})
    os.chmod(bad, 0o600)
    os.truncate(bad, 100)
    cases["eval_only_corrupt_checkpoints"] = call(
        train_main, ["--config", prepared, "--output_dir", j("o11"), "--run_mode", "eval"], j("o11", "checkpoint"))
    train("resume_only_truncated_checkpoints", prepared, "o11", "--resume_training", "true", watch=j("o11", "checkpoint"))
    # an output_dir in use by another run (a process holding its lock)
    os.makedirs(j("o12"))
    with open(j("o12", "metrics.jsonl"), "w") as f:
        f.write('{"step": 1, "loss": 6.0}\n')
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from bitcpm_ms.app.runlock import RunLock; "
                               "RunLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)",
                               j("o12")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    train("output_dir_in_use", prepared, "o12", watch=j("o12"))
    cases["output_dir_in_use"]["holder_pid"] = holder.pid
    holder.kill()
    holder.wait()
    # a latin-1 corpus
    from tests.data.test_integrity import _latin1_corpus
    import pathlib
    _latin1_corpus(pathlib.Path(j("latin1.txt")))
    cases["latin1_corpus"] = call(prepare_main, ["--config", TINY_YAML, "--input", j("latin1.txt"), "--output_dir",
                                                 j("ds_latin1"), "--vocab_size", "4096", "--seq_length", "32",
                                                 "--num_workers", "0", "--no_progress"])
    cases["latin1_corpus"]["exists_after"] = os.path.exists(j("ds_latin1"))
    # export into a directory that holds other files
    os.makedirs(j("export_out"))
    with open(j("export_out", "keep.txt"), "w") as f:
        f.write("precious")
    cases["export_into_non_empty_dir"] = call(export_main, ["--config", prepared, "--checkpoint", j("other", "wide.ckpt"),
                                                            "--output_dir", j("export_out")], j("export_out"))
    return cases


if __name__ == "__main__":
    result = main(sys.argv[1])
    with open(os.path.join(sys.argv[1], "results.json"), "w") as f:
        json.dump(result, f)
