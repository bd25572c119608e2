"""Data pipeline: streaming corpus readers, the GCIDE default corpus and its cleaner, a lossless
SentencePiece tokenizer, packing into MindRecord shards with a manifest, and dataset loading.

Importing this package is light (no MindSpore/MindFormers): the packing worker processes import
it. ``build_dataset`` (MindSpore) and ``BitCPMTokenizer`` (MindFormers) load on first access.
See docs/data.md.
"""
from .errors import DataError, DataWarning
from .readers import ReadStats, iter_documents, resolve_paths
from .tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SPTokenizer, train_tokenizer
from .config import PrepareConfig
from .manifest import read_manifest, split_files
from .packing import prepare_dataset
from .dataset import build_dataset

__all__ = ["DataError", "DataWarning", "ReadStats", "iter_documents", "resolve_paths",
           "BOS_ID", "EOS_ID", "PAD_ID", "UNK_ID", "SPTokenizer", "train_tokenizer",
           "PrepareConfig", "prepare_dataset", "read_manifest", "split_files", "build_dataset"]


def __getattr__(name):
    if name == "BitCPMTokenizer":
        from .mf_tokenizer import BitCPMTokenizer
        return BitCPMTokenizer
    raise AttributeError(name)
