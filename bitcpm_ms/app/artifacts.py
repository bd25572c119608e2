"""Where a run's inputs and outputs are: resolved once from the config and passed down.

`resolve(config)` answers, once per run, the questions every mode asks: the output directory,
the prepared dataset the run's data comes from (and whether it fits the model), and the
tokenizer: `processor.tokenizer.vocab_file` (a SentencePiece `tokenizer.model`, or a Hugging Face
tokenizer directory such as MiniCPM4's; `data.hf_tokenizer.load_tokenizer` opens either), else the
prepared dataset's `tokenizer.model`. `load_model(config, checkpoint)` builds the configured network and loads a
checkpoint's weights into it. Train, eval, predict, export and conversion all use these two.
"""
import os
from dataclasses import dataclass
from typing import Optional

from mindformers.models import build_network

from ..data.manifest import read_manifest_file
from ..errors import BitCPMError, ConfigError
from ..training.checkpoint_loading import find_checkpoint, load_weights
from .. import models  # noqa: F401  (registration)

TOKENIZER_FILE = "tokenizer.model"


@dataclass(frozen=True)
class Artifacts:
    output_dir: str
    dataset_dir: Optional[str]       # prepared dataset root (holds manifest.json) that fits the model
    dataset_problem: Optional[str]   # why dataset_dir is None
    tokenizer_file: Optional[str]    # a tokenizer.model file or a Hugging Face tokenizer directory

    def need_dataset(self) -> str:
        if self.dataset_dir is None:
            raise ConfigError(self.dataset_problem)
        return self.dataset_dir

    def need_tokenizer(self) -> str:
        """The tokenizer path (file or HF directory: open it with data.hf_tokenizer.load_tokenizer)."""
        if self.tokenizer_file is None:
            looked = os.path.join(self.dataset_dir or "<prepared dataset>", TOKENIZER_FILE)
            raise ConfigError("no tokenizer: set processor.tokenizer.vocab_file or prepare data "
                              f"(looked for {looked})")
        return self.tokenizer_file


def _dataset_candidates(config):
    """The eval / train dataset dirs and their parents, then data.output_dir."""
    out = []
    for section in ("eval_dataset", "train_dataset"):
        path = ((config.get(section) or {}).get("data_loader") or {}).get("dataset_dir")
        if path:
            out += [path, os.path.dirname(os.path.normpath(path))]
    out.append((config.get("data") or {}).get("output_dir"))
    return [p for p in out if p]


def _prepared_dataset(config):
    """(dataset_dir, problem): the first candidate with a manifest, checked against the model's
    sequence length and vocabulary (evaluating on data that does not fit would be meaningless)."""
    candidates = _dataset_candidates(config)
    mc = config.model.model_config
    for path in candidates:
        man = read_manifest_file(path)
        if man is None:
            continue
        if int(man["seq_length"]) != int(mc.seq_length) or int(man["vocab_size"]) > int(mc.vocab_size):
            return None, (f"prepared dataset {path} (seq_length {man['seq_length']}, vocab {man['vocab_size']}) "
                          f"does not fit the model (seq_length {mc.seq_length}, vocab {mc.vocab_size})")
        return os.path.abspath(path), None
    return None, (f"no prepared dataset (manifest.json) found in {candidates}; "
                  "prepare data first: python run/prepare_data.py --config CONFIG")


def resolve(config) -> Artifacts:
    dataset_dir, problem = _prepared_dataset(config)
    tokenizer = ((config.get("processor") or {}).get("tokenizer") or {}).get("vocab_file")
    if not (tokenizer and os.path.exists(tokenizer)):          # a tokenizer.model or an HF directory
        tokenizer = os.path.join(dataset_dir, TOKENIZER_FILE) if dataset_dir else None
        if tokenizer and not os.path.isfile(tokenizer):
            tokenizer = None
    return Artifacts(output_dir=os.path.abspath(config.output_dir), dataset_dir=dataset_dir,
                     dataset_problem=problem, tokenizer_file=tokenizer)


def build_model(config):
    """The network of config.model through MindFormers' builder (registered BitCPM classes)."""
    return build_network(config.model)


def model_checkpoint(config, art: Artifacts) -> str:
    """The weights eval / predict use when no --load_checkpoint is given: the run's own newest
    checkpoint, else `init_from_checkpoint` (the weights the run starts from: an imported model's
    config.yaml points there, so it predicts before any training), else the output dir (whose
    error then says where it looked)."""
    if config.get("load_checkpoint"):
        return config.load_checkpoint
    try:
        return find_checkpoint(art.output_dir)
    except BitCPMError:
        return config.get("init_from_checkpoint") or art.output_dir


def load_model(config, checkpoint: str):
    """(network, checkpoint file): the configured model with the weights of `checkpoint` (a file,
    or a directory searched by `find_checkpoint`)."""
    ckpt = find_checkpoint(checkpoint)
    net = build_model(config)
    load_weights(net, ckpt)
    return net, ckpt
