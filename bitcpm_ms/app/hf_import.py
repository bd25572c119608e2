"""`convert_hf.py from_hf`: a Hugging Face MiniCPM / BitCPM-CANN directory -> a ready-to-run bitcpm-ms directory.

    OUT_DIR/model.ckpt (+ sidecar)   the weights, MindFormers names, float32
    OUT_DIR/config.yaml              a complete run config (train / eval / predict / export / recipe)
    OUT_DIR/tokenizer/               the HF tokenizer files (tokenizer.model, added tokens, chat template)
    OUT_DIR/import.json              what was detected and converted

Real checkpoints come in two kinds, told apart by the weights themselves (`quant/pseudo.py`):
  * full precision (MiniCPM4, the recipe's starting point): copied as they are; config.yaml has
    `quant.enabled: false`, so eval / predict compute the published model, and `--quant.enabled
    true` starts ternary QAT from it;
  * pseudo-quantized (BitCPM-CANN releases: ternary codes x one scale per row, bf16): the group size
    is detected, codes and scales recovered exactly, and the latent written is codes x s / p (p =
    share of non-zero codes), so that with `quant: {enabled: true, group_size: <detected>}` our
    quantizer computes the published weights and continued QAT starts at the published loss.
    A projection that is not ternary in such a file is a named error.
  * our own latent exports (`to_hf --flavour latent`, config.json `bitcpm_quantization`): copied
    as they are, with the recorded quantizer switched on.
Tying follows HF semantics (config.json without tie_word_embeddings means tied, as MiniCPMConfig
says). Weights are read and written one tensor at a time (bf16 widened exactly), so peak memory
stays near the largest tensor, not the model. Everything is built under a temporary name and
renamed into place: a failed import leaves nothing half-written.
"""
import json
import os
import shutil

import yaml

from ..errors import ConversionError
from ..fileio import atomic_dir, atomic_json
from ..layout import PROJECTIONS
from ..models.hf_adapter import hf_config_to_model_config, imported_name
from ..quant.pseudo import common_group_size, latent_for, recover_codes_scales, ternary_group_size
from .hf_weights import HFWeights, write_ckpt_stream
from ..training.checkpoint_files import publish_checkpoint

CHECKPOINT = "model.ckpt"
TOKENIZER_FILES = ("tokenizer.model", "tokenizer_config.json", "added_tokens.json", "special_tokens_map.json",
                   "generation_config.json")
_PROJECTION_SUFFIXES = tuple(f".{p.hf_name}.weight" for p in PROJECTIONS)
TEMPLATE = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "yaml_configs", "bitcpm_tiny_cpu.yaml")


def read_hf_config(hf_dir: str) -> dict:
    path = os.path.join(hf_dir, "config.json")
    if not os.path.isfile(path):
        raise ConversionError(f"{hf_dir} has no config.json")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path}: not readable JSON ({err})") from None


def detect_quantization(weights: HFWeights, names, mode: str = "auto"):
    """(group_size or None, per-tensor detail): None means full precision. mode: auto | yes | no."""
    if mode not in ("auto", "yes", "no"):
        raise ConversionError(f"--quantized must be auto, yes or no, got {mode!r}")
    projections = [n for n in names if n.endswith(_PROJECTION_SUFFIXES)]
    if mode == "no" or not projections:
        return None, {}
    found = {n: ternary_group_size(weights.get(n)) for n in projections}
    ternary = [n for n, g in found.items() if g is not None]
    if not ternary and mode == "auto":
        return None, found
    plain = [n for n, g in found.items() if g is None]
    if plain:
        raise ConversionError(f"pseudo-quantized checkpoint: {plain[0]} is not ternary codes x scale "
                              f"({len(plain)} of {len(projections)} projections are not; {len(ternary)} are)"
                              + ("" if ternary else "; use --quantized auto for a full-precision model"))
    in_features = [int(weights.shape(n)[1]) for n in projections]
    return common_group_size([found[n] for n in projections], in_features), found


def _converted(weights: HFWeights, names, tied: bool, group_size):
    """(our name, float32 array) in file order: renamed, the tied head skipped, ternary projections
    replaced by the latent that reproduces them."""
    for name in names:
        ours = imported_name(name, tied)
        if ours is None:
            continue
        value = weights.get(name)
        if group_size is not None and name.endswith(_PROJECTION_SUFFIXES):
            codes, scales = recover_codes_scales(value, group_size)
            value = latent_for(codes, scales, group_size)
        yield ours, value


def _tokenizer_source(hf_dir: str, tokenizer_dir):
    src = tokenizer_dir or hf_dir
    if not os.path.isfile(os.path.join(src, "tokenizer.model")):
        raise ConversionError(f"{src} has no tokenizer.model (the SentencePiece model of a MiniCPM tokenizer); "
                              "pass --tokenizer_dir DIR with the model's tokenizer files")
    return src


def run_config(model_config: dict, out_dir: str, quant: dict, seq_length: int) -> dict:
    """config.yaml: the tiny CPU config's run settings around the imported model."""
    if not os.path.isfile(TEMPLATE):
        raise ConversionError(f"the run-config template {TEMPLATE} is missing (is bitcpm-ms installed from its "
                              "source tree?)")
    with open(TEMPLATE, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)
    tok_dir = os.path.join(out_dir, "tokenizer")
    mc = {k: v for k, v in cfg["model"]["model_config"].items() if k not in ("dim_model_base",)}
    mc.update(model_config)
    mc.update(seq_length=int(seq_length), batch_size=1)
    quant = dict(cfg["quant"], **quant)
    mc["qat_config"] = quant
    name = os.path.basename(os.path.normpath(out_dir))
    data_dir = os.path.join(out_dir, "data")
    # weights only: training starts from them (fresh optimizer) and resumes from its own checkpoints;
    # eval / predict use them until the run has a checkpoint of its own (artifacts.model_checkpoint)
    cfg.update(output_dir=os.path.join(out_dir, "run"), init_from_checkpoint=os.path.join(out_dir, CHECKPOINT),
               load_checkpoint="", quant=quant)
    cfg["model"]["model_config"] = mc
    cfg["data"].update(output_dir=data_dir, tokenizer={"model_file": os.path.join(tok_dir, "tokenizer.model")})
    cfg["processor"]["tokenizer"] = {"type": "BitCPMTokenizer", "vocab_file": tok_dir}
    cfg["runner_config"]["batch_size"] = 1
    for section, split in (("train_dataset", "train"), ("eval_dataset", "validation")):
        cfg[section]["batch_size"] = 1
        cfg[section]["data_loader"]["dataset_dir"] = os.path.join(data_dir, split)
    for task in ("train_dataset_task", "eval_dataset_task"):
        cfg[task]["dataset_config"] = cfg[task.replace("_task", "")]
    for cb in cfg["callbacks"]:
        if cb.get("type") == "BitCPMCheckpointMonitor":
            cb["prefix"] = name
    return cfg


def from_hf(hf_dir: str, output_dir: str, seq_length: int = 512, quantized: str = "auto",
            tokenizer_dir: str = None, overwrite: bool = False) -> dict:
    """Import `hf_dir` into `output_dir` (see the module docstring); returns the import summary."""
    if output_dir.endswith(".ckpt"):
        raise ConversionError(f"--output {output_dir}: from_hf writes a directory (model.ckpt, config.yaml, "
                              "tokenizer/); give a directory name")
    hf = read_hf_config(hf_dir)
    model_config = hf_config_to_model_config(hf)
    tok_src = _tokenizer_source(hf_dir, tokenizer_dir)
    weights = HFWeights(hf_dir)
    names = weights.names()
    tied = bool(model_config["tie_word_embeddings"])
    if "model.embed_tokens.weight" not in weights:
        raise ConversionError(f"{hf_dir} lacks model.embed_tokens.weight: not a MiniCPM checkpoint")
    if not tied and "lm_head.weight" not in weights:
        raise ConversionError(f"{hf_dir} lacks lm_head.weight, and config.json sets tie_word_embeddings false")
    for name in names:                                  # unknown names fail before anything is written
        imported_name(name, tied)
    recorded = hf.get("bitcpm_quantization") or {}        # our own exports say what they hold
    if recorded.get("format") == "latent" and quantized != "no":
        group_size, per_tensor, recover = int(recorded["group_size"]), {}, None
    else:
        group_size, per_tensor = detect_quantization(weights, names, quantized)
        recover = group_size
    quant = {k: v for k, v in recorded.items() if k != "format"} if recorded else {}
    quant.update(enabled=group_size is not None, group_size=-1 if group_size is None else group_size)
    out_dir = os.path.abspath(output_dir)
    summary = {"source": os.path.abspath(hf_dir), "output_dir": out_dir, "tied": tied,
               "pseudo_quantized": recover is not None, "quantized": group_size is not None, "group_size": group_size,
               "dtypes": sorted({weights.dtype(n) for n in names}), "rope_scaling": "rope_scaling" in model_config}
    with atomic_dir(out_dir, overwrite=overwrite, error=ConversionError) as tmp:
        info = {"step": 0, "source": summary["source"], "model": model_config}
        publish_checkpoint(lambda path: summary.update(tensors=write_ckpt_stream(
            path, _converted(weights, names, tied, recover))), tmp, CHECKPOINT, info)
        os.makedirs(os.path.join(tmp, "tokenizer"))
        for f in TOKENIZER_FILES:
            for src in (tok_src, hf_dir):
                if os.path.isfile(os.path.join(src, f)):
                    shutil.copyfile(os.path.join(src, f), os.path.join(tmp, "tokenizer", f))
                    break
        cfg = run_config(model_config, out_dir, quant, seq_length)
        with open(os.path.join(tmp, "config.yaml"), "w", encoding="utf-8") as f:
            f.write("# written by convert_hf.py from_hf; see docs/hf_models.md\n")
            yaml.safe_dump(cfg, f, sort_keys=False, allow_unicode=True)
        atomic_json(dict(summary, per_tensor_group_size=per_tensor), os.path.join(tmp, "import.json"), indent=1)
    return summary
