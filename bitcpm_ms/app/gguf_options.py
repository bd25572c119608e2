"""The choices of a GGUF export and the check of its arguments, shared by the command line
(`gguf_cli`, before MindSpore is imported) and `gguf_export.export_gguf` (for Python callers)."""
import os

from ..errors import ConversionError

GGUF_TYPES = ("f32", "f16", "tq2_0", "tq1_0")
EMBEDDING_TYPES = ("f32", "f16", "q8_0")
TERNARY_TYPES = ("tq2_0", "tq1_0")


def check_export_args(out_path: str, gguf_type: str, embedding_type: str, overwrite: bool) -> None:
    """Refuse bad arguments before anything slow happens."""
    if gguf_type not in GGUF_TYPES:
        raise ConversionError(f"unknown --gguf_type {gguf_type!r}: use one of {', '.join(GGUF_TYPES)}")
    if embedding_type not in EMBEDDING_TYPES:
        raise ConversionError(f"unknown --embedding_type {embedding_type!r}: use one of {', '.join(EMBEDDING_TYPES)}")
    if not out_path.endswith(".gguf"):
        raise ConversionError(f"GGUF output path {out_path} must end with .gguf")
    if os.path.isdir(out_path):
        raise ConversionError(f"GGUF output path {out_path} is a directory")
    if os.path.exists(out_path) and not overwrite:
        raise ConversionError(f"GGUF output {out_path} exists (pass --overwrite to replace it)")
    parent = os.path.dirname(os.path.abspath(out_path))
    if not os.path.isdir(parent):
        raise ConversionError(f"directory of the GGUF output {out_path} does not exist")
