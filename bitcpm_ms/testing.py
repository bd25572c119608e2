"""Small synthetic data and configs for tests and benchmarks (the torchao.testing pattern).

Token MindRecord files in the packed layout (`input_ids` int32, seq_length + 1 per row), a shrunk
copy of the tiny CPU YAML, and a free loopback port for msrun. Nothing here downloads anything.
"""
import os
import socket
import json

import numpy as np
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_YAML = os.path.join(REPO, "yaml_configs", "bitcpm_tiny_cpu.yaml")

# A very small model so that a 2-worker launch (compile included) takes seconds.
SMALL_MODEL = dict(hidden_size=64, num_layers=1, num_heads=2, n_kv_heads=1, intermediate_size=128,
                   dim_model_base=32, vocab_size=512, seq_length=32)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_token_rows(path: str, rows, ends=None) -> str:
    """Write int32 token rows [n, seq_length + 1] as a one-file MindRecord dataset at `path`; with
    `ends` [n, K] also their actual_seq_len column (data/documents.py)."""
    from mindspore.mindrecord import FileWriter
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    writer = FileWriter(path, shard_num=1, overwrite=True)
    schema = {"input_ids": {"type": "int32", "shape": [-1]}}
    if ends is not None:
        schema["actual_seq_len"] = {"type": "int32", "shape": [-1]}
    writer.add_schema(schema, "packed")
    records = [{"input_ids": np.asarray(r, np.int32)} for r in rows]
    for rec, e in zip(records, ends if ends is not None else []):
        rec["actual_seq_len"] = np.asarray(e, np.int32)
    writer.write_raw_data(records)
    writer.commit()
    return path


def make_document_mindrecord(path: str, num_rows: int, seq_length: int, vocab_size: int, eos_at=(5, 17),
                             eos_id: int = 2, width: int = 8, seed: int = 0) -> str:
    """make_mindrecord's rows with EOS at the input positions `eos_at` of every row and the
    actual_seq_len column: every row has the same documents' lengths, so every row (and every
    data-parallel rank) counts the same number of loss tokens. Returns the directory."""
    from .data.documents import rows_actual_seq_len
    rng = np.random.default_rng(seed)
    rows = np.stack([np.concatenate([[3 + i % (vocab_size - 3)], rng.integers(3, vocab_size, seq_length)])
                     for i in range(num_rows)]).astype(np.int32)
    rows[:, [p for p in eos_at if p < seq_length]] = eos_id
    write_token_rows(path, rows, rows_actual_seq_len(rows, eos_id, width))
    return os.path.dirname(path)


def make_mindrecord(path: str, num_rows: int, seq_length: int, vocab_size: int, seed: int = 0) -> str:
    """num_rows packed samples of seq_length + 1 tokens in [3, vocab) (no pad id 0, so every token
    counts in the loss); token 0 of row i is a row id, 3 + i % (vocab - 3). Returns the directory."""
    rng = np.random.default_rng(seed)
    rows = [np.concatenate([[3 + i % (vocab_size - 3)], rng.integers(3, vocab_size, seq_length)])
            for i in range(num_rows)]
    write_token_rows(path, rows)
    return os.path.dirname(path)


def write_learnable_mindrecord(path: str, n_samples: int, seq_length: int, vocab: int, seed: int = 0,
                               documents: bool = False) -> str:
    """Samples of seq_length+1 ids following `next = (prev + 3) % vocab` from a random start:
    a pattern a tiny model learns within a few dozen steps. `documents`: with the actual_seq_len
    column (a document ends after each id 2, EOS)."""
    from .data.documents import rows_actual_seq_len
    rng = np.random.default_rng(seed)
    rows = np.stack([(int(rng.integers(0, vocab)) + 3 * np.arange(seq_length + 1)) % vocab
                     for _ in range(n_samples)]).astype(np.int32)
    return write_token_rows(path, rows, rows_actual_seq_len(rows, 2, 8) if documents else None)


def write_config(path: str, data_dir: str, output_dir: str, batch_size: int, data_parallel: int = 1,
                 model: dict = None, total_steps: int = 20, group_size: int = 32, documents: bool = False) -> str:
    """The tiny CPU YAML, shrunk, deterministic (no shuffle), checkpoint + metrics every step;
    document masking (use_eod_attn_mask_compression) as `documents` says, whatever the YAML's."""
    with open(TINY_YAML, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)          # anchors resolved
    cfg["output_dir"] = output_dir
    cfg["eval_after_train"] = False
    cfg.pop("data", None)                # data is given directly (dataset_dir), nothing to prepare
    cfg["use_parallel"] = data_parallel > 1
    cfg["quant"]["group_size"] = group_size
    mc = cfg["model"]["model_config"]
    mc.update(model or SMALL_MODEL)
    mc["batch_size"] = batch_size
    mc["qat_config"] = dict(cfg["quant"])
    mc["use_eod_attn_mask_compression"] = bool(documents)
    cfg["runner_config"]["batch_size"] = batch_size
    cfg["train_dataset"]["batch_size"] = batch_size
    cfg["train_dataset"]["data_loader"]["dataset_dir"] = data_dir
    cfg["train_dataset"]["data_loader"]["shuffle"] = False
    cfg["train_dataset_task"]["dataset_config"] = cfg["train_dataset"]
    cfg["eval_dataset_task"]["dataset_config"] = cfg["eval_dataset"]
    # a fixed schedule length, identical for every world size; warmup >= 1 step (MindFormers'
    # WarmUpStableDecayLR returns NaN at step 0 when warmup_steps rounds to 0)
    cfg["lr_schedule"].update(total_steps=total_steps, warmup_ratio=0.1)
    cfg["parallel"]["parallel_mode"] = 0
    cfg["parallel"]["gradients_mean"] = True
    cfg["parallel_config"]["data_parallel"] = data_parallel
    for cb in cfg["callbacks"]:
        if cb["type"] == "BitCPMMetricsMonitor":
            cb["log_interval"] = 1
        if cb["type"] in ("CheckpointMonitor", "BitCPMCheckpointMonitor"):
            cb.update(prefix="dp", save_checkpoint_steps=1, keep_checkpoint_max=20)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg, f, sort_keys=False)
    return path




def write_teacher(out_dir: str, model: dict, seed: int = 0, head_scale: float = 1.0):
    """A random full-precision BitCPM teacher for distillation tests and benchmarks: its checkpoint
    and a run config holding its model_config. head_scale > 1 sharpens its output distribution.
    Returns (config_path, checkpoint_path)."""
    import mindspore as ms
    from .models import BitCPMConfig, BitCPMForCausalLM
    os.makedirs(out_dir, exist_ok=True)
    model_config = dict(model, scale_emb=12, scale_depth=1.4)
    ms.set_seed(seed)
    net = BitCPMForCausalLM(BitCPMConfig(**model_config))
    if head_scale != 1.0:
        net.lm_head.weight.set_data(ms.Tensor(net.lm_head.weight.asnumpy() * head_scale))
    ckpt = os.path.join(out_dir, "teacher.ckpt")
    ms.save_checkpoint(net, ckpt)
    cfg = os.path.join(out_dir, "teacher_config.json")
    with open(cfg, "w", encoding="utf-8") as f:
        json.dump({"model": {"model_config": dict(model_config, type="BitCPMConfig")}}, f)
    return cfg, ckpt


def random_bitcpm(model_config: dict, quant: dict = None, seed: int = 0):
    """A BitCPMForCausalLM built from a model_config dict with random (MindFormers-initialized) weights,
    in eval mode: with `quant` (QuantConfig fields) its linears are ternary fake-quant layers, so
    the model is a random ternary model of that shape (no training needed; tests and benchmarks)."""
    import mindspore as ms
    from .models import BitCPMConfig, BitCPMForCausalLM
    ms.set_seed(seed)
    cfg = dict(batch_size=1, **model_config)
    if quant is not None:
        cfg["qat_config"] = dict(quant)
    net = BitCPMForCausalLM(BitCPMConfig(**cfg))
    net.set_train(False)
    return net
