"""Tensor-by-tensor reading of Hugging Face weight files and writing of MindSpore checkpoints.

Real checkpoints are large (MiniCPM4-8B: 16 GB of bf16 in sharded safetensors, 33 GB as float32),
so conversion never holds the whole model: `HFWeights` maps the files and hands out one tensor at
a time as float32, and `write_ckpt_stream` appends one protobuf record per tensor, the way
`mindspore.save_checkpoint` lays out its file, so `mindspore.load_checkpoint` reads it.

Formats read:
  * `model.safetensors`, or shards listed in `model.safetensors.index.json` (every listed shard
    must exist: a missing one is a named error, not a half-converted model);
  * F32 / F16 / BF16 tensors (bf16 is widened exactly: its bits are the top half of a float32);
  * `pytorch_model*.bin` (the BitCPM-CANN-3B release) through the optional extra `torch`.
"""
import json
import os
import re
from typing import Dict, Iterator, List, Tuple

import numpy as np

from ..errors import ConversionError

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
              "I64": np.int64, "I32": np.int32}
INDEX_FILE = "model.safetensors.index.json"
SLICE_BYTES = 64 << 20           # largest protobuf record of a written checkpoint (bounds the copies)


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns (uint16) -> float32, exactly."""
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest even (NaN kept NaN)."""
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def _safetensors_header(path: str) -> Tuple[dict, int]:
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n < (1 << 30):
                raise ValueError("bad header length")
            header = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        raise ConversionError(f"{path}: not a readable safetensors file ({err})") from None
    header.pop("__metadata__", None)
    return header, 8 + n


class HFWeights:
    """The tensors of a HF model directory, read lazily: `names()`, `dtype(name)`, `get(name)`."""

    def __init__(self, model_dir: str):
        if not os.path.isdir(model_dir):
            raise ConversionError(f"Hugging Face model directory {model_dir} does not exist")
        self.model_dir = model_dir
        self._where: Dict[str, Tuple[str, dict, int]] = {}
        self._torch: Dict[str, object] = {}
        files = self._safetensors_files()
        if files:
            for path in files:
                header, offset = _safetensors_header(path)
                for name, meta in header.items():
                    if meta["dtype"] not in _ST_DTYPES:
                        raise ConversionError(f"{path}: tensor {name} has dtype {meta['dtype']}, not a float type "
                                              "this converter reads")
                    self._where[name] = (path, meta, offset)
        else:
            self._load_torch_bins()

    def _safetensors_files(self) -> List[str]:
        index = os.path.join(self.model_dir, INDEX_FILE)
        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError) as err:
                raise ConversionError(f"{index}: not a safetensors index ({err})") from None
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not os.path.isfile(os.path.join(self.model_dir, s))]
            if missing:
                raise ConversionError(f"{index} lists shard(s) {missing} that are not in {self.model_dir}")
            return [os.path.join(self.model_dir, s) for s in shards]
        return sorted(os.path.join(self.model_dir, f) for f in os.listdir(self.model_dir)
                      if f.endswith(".safetensors"))

    def _load_torch_bins(self):
        bins = sorted(f for f in os.listdir(self.model_dir) if re.match(r"pytorch_model.*\.bin$", f))
        if not bins:
            raise ConversionError(f"no *.safetensors, {INDEX_FILE} or pytorch_model*.bin in {self.model_dir}")
        try:
            import torch
        except ImportError:
            raise ConversionError(f"{self.model_dir} holds pytorch_model.bin; reading it needs the optional extra "
                                  "torch (pip install 'bitcpm-ms[torch]'), or convert it to safetensors first") \
                from None
        for f in bins:      # mmap: tensors are paged in one at a time as they are converted
            state = torch.load(os.path.join(self.model_dir, f), map_location="cpu", mmap=True, weights_only=True)
            self._torch.update(state)

    def names(self) -> List[str]:
        return list(self._where) if self._where else list(self._torch)

    def dtype(self, name: str) -> str:
        """'F32', 'F16' or 'BF16' (torch tensors report the same names)."""
        if name in self._torch:
            return {"torch.float32": "F32", "torch.float16": "F16", "torch.bfloat16": "BF16"}.get(
                str(self._torch[name].dtype), str(self._torch[name].dtype))
        return self._where[name][1]["dtype"]

    def shape(self, name: str) -> tuple:
        if name in self._torch:
            return tuple(self._torch[name].shape)
        return tuple(self._where[name][1]["shape"])

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (bf16 / f16 widened exactly). F32 tensors come back as a read-only
        view of the mapped file (no copy: pages are read as the caller touches them)."""
        if name in self._torch:
            import torch
            return self._torch[name].to(torch.float32).numpy()
        path, meta, offset = self._where[name]
        begin, end = meta["data_offsets"]
        raw = np.memmap(path, dtype=np.uint8, mode="r", offset=offset + begin, shape=(end - begin,)) \
            if end > begin else np.zeros(0, np.uint8)
        arr = np.frombuffer(raw, dtype=_ST_DTYPES[meta["dtype"]]).reshape(meta["shape"])
        if meta["dtype"] == "BF16":
            return bf16_to_f32(arr)
        if meta["dtype"] == "F32":
            return arr
        return np.array(arr, dtype=np.float32)

    def __contains__(self, name: str) -> bool:
        return name in self._where or name in self._torch


def write_ckpt_stream(path: str, tensors: Iterator[Tuple[str, np.ndarray]]) -> int:
    """Write (name, float32 array) pairs as a MindSpore .ckpt, one record per tensor (large ones split
    in slices, as mindspore.save_checkpoint does); returns the tensor count. Memory: one tensor."""
    from mindspore.train.checkpoint_pb2 import Checkpoint
    count = 0
    with open(path, "wb") as f:
        for name, value in tensors:
            value = np.asarray(value, np.float32)
            parts = [value]
            if value.nbytes > SLICE_BYTES and value.ndim:              # whole rows per record
                rows = max(1, SLICE_BYTES // max(1, value[0].nbytes))
                parts = [value[i:i + rows] for i in range(0, value.shape[0], rows)]
            for part in parts:
                record = Checkpoint()
                entry = record.value.add()
                entry.tag = name
                entry.tensor.dims.extend(list(value.shape))
                entry.tensor.tensor_type = "Float32"
                entry.tensor.tensor_content = np.ascontiguousarray(part).tobytes()
                f.write(record.SerializeToString())
            count += 1
    return count
