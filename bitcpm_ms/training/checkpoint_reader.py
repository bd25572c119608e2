"""Reading a MindSpore `.ckpt` one parameter at a time, touching only the parameters asked for.

Why not `mindspore.load_checkpoint(path, choice_func=...)`: for the `.ckpt` format MindSpore 2.9
reads the whole file into one `bytes` object and parses all of it as one protobuf message before
`choice_func` is consulted (`_parse_ckpt_proto`: `pb_content = f.read()`, then
`checkpoint_list.ParseFromString(pb_content)`, mindspore/train/serialization.py:1616-1646; the
filter runs afterwards, :1258-1262). Loading the 32.7 GB fp32 init checkpoint of the 8B model
therefore cost every rank the file size several times over, whatever it asked for, and loading
a training checkpoint's weights read its Adam moments (two thirds of the file) too.

The file is a sequence of serialized `Checkpoint` messages, one `Value` each (field 1, length
delimited; `_write_parameter_data`, serialization.py:480-510): `Value {tag = 1 (name), tensor = 2,
maptensor = 3}`, `TensorProto {dims = 1, tensor_type = 2, tensor_content = 3}`; a parameter over
`SLICE_SIZE` (512 MiB) is written as several consecutive Values with the same tag whose contents
concatenate; a file saved with `crc_check` ends with `b"crc_num"` and 10 bytes. `index()` walks
those headers and seeks over every tensor's content, so listing a file reads a few kilobytes;
`read()` then reads one parameter's bytes straight into the buffer the tensor is built on. Peak
memory for loading a model is the model plus nothing, where MindSpore's reader needed the file
size two to three times on top (measured in tests/training/test_checkpoint_reader.py).

Map parameters (embedding caches, `maptensor`) and encrypted files are not read here:
`UnsupportedCheckpoint` tells the caller to use `mindspore.load_checkpoint` instead. A file that
ends inside a record, or holds bytes that are not this format, is a `CheckpointError` naming it.
"""
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

import numpy as np
from mindspore.common import np_dtype
import mindspore as ms

from ..errors import CheckpointError

_CRC_TRAILER = b"crc_num"
_CRC_TRAILER_LEN = len(_CRC_TRAILER) + 10
_LEN, _VARINT, _I64, _I32 = 2, 0, 1, 5          # protobuf wire types


class UnsupportedCheckpoint(Exception):
    """A valid checkpoint this reader does not handle (map parameter, encrypted, int4): use MindSpore's."""


@dataclass
class Entry:
    """Where one parameter's bytes are: its dims, MindSpore type name and content spans (offset, length)."""
    name: str
    dims: Tuple[int, ...]
    tensor_type: str
    spans: List[Tuple[int, int]] = field(default_factory=list)

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.spans)


def _numpy_type(tensor_type: str):
    types = {"Int8": np.int8, "UInt8": np.uint8, "Int16": np.int16, "UInt16": np.uint16, "Int32": np.int32,
             "UInt32": np.uint32, "Int64": np.int64, "UInt64": np.uint64, "Float16": np.float16,
             "Float32": np.float32, "Float64": np.float64, "Bool": np.bool_, "BFloat16": np_dtype.bfloat16}
    if tensor_type not in types:
        raise UnsupportedCheckpoint(f"tensor type {tensor_type!r}")
    return types[tensor_type]


class _Reader:
    """Protobuf wire-format primitives over a seekable file, bounded by `end`."""

    def __init__(self, f: BinaryIO, path: str, end: int):
        self.f, self.path, self.end = f, path, end

    def bad(self, what: str) -> CheckpointError:
        return CheckpointError(f"cannot read checkpoint {self.path} ({os.path.getsize(self.path):,} bytes): "
                               f"{what} at byte {self.f.tell():,}: not a complete MindSpore checkpoint")

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.f.read(1)
            if not b:
                raise self.bad("the file ends inside a record")
            result |= (b[0] & 0x7F) << shift
            if b[0] < 0x80:
                return result
            shift += 7
            if shift > 63:
                raise self.bad("a malformed length")

    def length(self, limit: int) -> int:
        n = self.varint()
        if self.f.tell() + n > limit:
            raise self.bad(f"a record of {n:,} bytes that runs past its end")
        return n

    def skip(self, wire: int, limit: int) -> None:
        if wire == _VARINT:
            self.varint()
        elif wire == _LEN:
            self.f.seek(self.length(limit), os.SEEK_CUR)
        elif wire in (_I64, _I32):
            self.f.seek(8 if wire == _I64 else 4, os.SEEK_CUR)
        else:
            raise self.bad(f"wire type {wire}")


def _payload_end(f: BinaryIO, size: int) -> int:
    """Where the records end: before the crc trailer of a file saved with crc_check."""
    if size >= _CRC_TRAILER_LEN:
        f.seek(size - _CRC_TRAILER_LEN)
        if f.read(len(_CRC_TRAILER)) == _CRC_TRAILER:
            return size - _CRC_TRAILER_LEN
    return size


def _tensor_header(r: _Reader, end: int, entry_dims: List[int]) -> Tuple[Optional[str], Optional[Tuple[int, int]]]:
    """Parse a TensorProto up to `end`: (tensor_type, content span); dims are appended to `entry_dims`."""
    tensor_type, span = None, None
    while r.f.tell() < end:
        key = r.varint()
        number, wire = key >> 3, key & 7
        if number == 1 and wire == _VARINT:
            entry_dims.append(r.varint())
        elif number == 1 and wire == _LEN:                 # packed dims
            n = r.length(end)
            stop = r.f.tell() + n
            while r.f.tell() < stop:
                entry_dims.append(r.varint())
        elif number == 2 and wire == _LEN:
            tensor_type = r.f.read(r.length(end)).decode("utf-8", "replace")
        elif number == 3 and wire == _LEN:
            n = r.length(end)
            span = (r.f.tell(), n)
            r.f.seek(n, os.SEEK_CUR)
        else:
            r.skip(wire, end)
    return tensor_type, span


def index(path: str) -> "OrderedDict[str, Entry]":
    """Every parameter of a `.ckpt` file in file order, without reading any tensor content."""
    size = os.path.getsize(path)
    out: "OrderedDict[str, Entry]" = OrderedDict()
    with open(path, "rb") as f:
        end = _payload_end(f, size)
        f.seek(0)
        r = _Reader(f, path, end)
        previous = None
        while f.tell() < end:
            key = r.varint()
            if key != (1 << 3 | _LEN):
                if previous is None:             # encrypted, or not a checkpoint: MindSpore's reader says which
                    raise UnsupportedCheckpoint("does not start with a parameter record")
                raise r.bad(f"an unexpected field {key >> 3}")
            n = r.length(end)
            value_end = f.tell() + n
            name, dims, tensor_type, span = None, [], None, None
            while f.tell() < value_end:
                vkey = r.varint()
                number, wire = vkey >> 3, vkey & 7
                if number == 1 and wire == _LEN:
                    name = f.read(r.length(value_end)).decode("utf-8")
                elif number == 2 and wire == _LEN:
                    n = r.length(value_end)
                    tensor_end = f.tell() + n
                    tensor_type, span = _tensor_header(r, tensor_end, dims)
                elif number == 3:
                    raise UnsupportedCheckpoint(f"map parameter {name!r}")
                else:
                    r.skip(wire, value_end)
            if name is None or tensor_type is None:
                raise r.bad("a record without a name or a tensor type")
            if name == previous:                     # the next slice of a parameter over SLICE_SIZE
                out[name].spans.append(span or (f.tell(), 0))
            else:
                if name in out:
                    raise r.bad(f"parameter {name!r} a second time")
                out[name] = Entry(name, tuple(dims), tensor_type, [span or (f.tell(), 0)])
            previous = name
    return out


def read(path: str, entry: Entry, f: Optional[BinaryIO] = None):
    """One parameter as a `mindspore.Tensor` (a str for string entries), read into a single buffer."""
    buf = bytearray(entry.nbytes)
    view = memoryview(buf)
    own = f is None
    f = open(path, "rb") if own else f
    try:
        pos = 0
        for offset, n in entry.spans:
            f.seek(offset)
            if f.readinto(view[pos:pos + n]) != n:
                raise CheckpointError(f"cannot read checkpoint {path}: {entry.name} ends early (file truncated?)")
            pos += n
    finally:
        if own:
            f.close()
    if entry.tensor_type == "str":                 # MindSpore stores a str as UTF-32 (numpy "U")
        return str(np.frombuffer(bytes(buf), "U" + str(len(buf) // 4))[0])
    dtype = _numpy_type(entry.tensor_type)
    dims = () if entry.dims == (0,) else entry.dims
    count = int(np.prod(dims)) if dims else 1
    if count * np.dtype(dtype).itemsize != len(buf):
        raise CheckpointError(f"cannot read checkpoint {path}: {entry.name} holds {len(buf):,} bytes, its shape "
                              f"{tuple(dims)} of {entry.tensor_type} needs {count * np.dtype(dtype).itemsize:,}")
    return ms.Tensor.from_numpy(np.frombuffer(buf, dtype=dtype).reshape(dims))


def load(path: str, choice: Optional[Callable[[str], bool]] = None) -> Dict[str, object]:
    """{name: Tensor or str} of the chosen parameters (all when `choice` is None); the others are not read."""
    entries = index(path)
    with open(path, "rb") as f:
        return {name: read(path, e, f) for name, e in entries.items() if choice is None or choice(name)}
