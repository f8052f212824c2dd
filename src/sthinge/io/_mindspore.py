"""MindSpore ``.ckpt`` files read and written without MindSpore.

A ``.ckpt`` file is a protobuf ``Checkpoint`` message (proto2, schema ``checkpoint.proto``)::

    message Checkpoint {
      message Value {
        required string tag = 1;            // parameter name
        TensorProto tensor = 2;             // (inside ``oneof value`` in newer versions)
        MapTensorProto maptensor = 3;       // newer versions only, hash-map parameters (skipped here)
      }
      repeated Value value = 1;
    }
    message TensorProto {
      repeated int64 dims = 1;              // not packed: one ``0x08 varint`` per dimension
      required string tensor_type = 2;      // "Float32", "BFloat16", "Int64", "Bool", "str", ...
      required bytes tensor_content = 3;    // raw little-endian C-order buffer
    }

MindSpore writes one ``Value`` per tensor, back to back. Tensors larger than 512 MiB are split into several
consecutive ``Value`` entries with the same tag; each carries the full ``dims`` and one slice of the bytes, and
readers concatenate them. Newer MindSpore versions may append a 17-byte trailer: ``b"crc_num"`` followed by the
CRC32 of all preceding bytes as a 10-byte big-endian integer.

The reader here is a hand-written streaming parser over a memory map: it never holds the whole file as a
Python ``bytes`` object, does not depend on the ``protobuf`` package and is not limited to 2 GiB.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sthinge.io._atomic import atomic_write

__all__ = ["inspect_mindspore_ckpt", "read_mindspore_ckpt", "write_mindspore_ckpt"]

#: MindSpore type string -> little-endian numpy dtype (``BFloat16``, ``str`` and ``random_op`` are special-cased).
_NUMPY_TYPES: dict[str, str] = {
    "Bool": "|b1",
    "Int8": "|i1",
    "UInt8": "|u1",
    "Int16": "<i2",
    "UInt16": "<u2",
    "Int32": "<i4",
    "UInt32": "<u4",
    "Int64": "<i8",
    "UInt64": "<u8",
    "Float16": "<f2",
    "Float32": "<f4",
    "Float64": "<f8",
}
_SPECIAL_TYPES = ("BFloat16", "str", "random_op")
#: numpy ``dtype.str`` (native order normalised to little-endian) -> MindSpore type string.
_TYPE_OF_NUMPY: dict[str, str] = {np.dtype(v).newbyteorder("<").str: k for k, v in _NUMPY_TYPES.items()}

#: MindSpore's slice size: tensors above 512 MiB are split into several equal-tag entries.
SLICE_BYTES = 512 * 1024 * 1024
_CRC_MARKER = b"crc_num"
_TRAILER_LEN = 17  # 7-byte marker + 10-byte big-endian CRC32

_WIRE_VARINT, _WIRE_I64, _WIRE_LEN, _WIRE_I32 = 0, 1, 2, 5

KeySelector = Callable[[str], bool] | Collection[str] | None


class _Corrupt(Exception):
    """Internal: a parse error at a byte offset; turned into ``ValueError`` naming the file."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset
        self.reason = reason


@dataclass
class _Entry:
    """One logical tensor: a run of consecutive ``Value`` entries with the same tag."""

    tag: str
    dims: tuple[int, ...]
    type: str
    offset: int  # file offset of the first ``Value`` (for messages)
    chunks: list[tuple[int, int]] = field(default_factory=list)  # (content offset, content length)

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self.chunks)


# ---------------------------------------------------------------------------------------------------------------------
# protobuf wire format primitives


def _read_varint(buf: Any, pos: int, end: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; return ``(value, new_pos)``."""
    start = pos
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise _Corrupt(start, "data ends inside a varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Corrupt(start, "varint longer than 10 bytes")


def _read_len(buf: Any, pos: int, end: int, what: str) -> tuple[int, int]:
    """Read a length prefix and check that the delimited payload fits in ``[pos, end)``."""
    start = pos
    n, pos = _read_varint(buf, pos, end)
    if n > end - pos:
        raise _Corrupt(start, f"{what} of {n} bytes runs past the end of its container ({end - pos} bytes left)")
    return n, pos


def _skip_field(buf: Any, pos: int, end: int, wire: int, key_at: int) -> int:
    """Skip the payload of a field with wire type ``wire``; return the position after it."""
    if wire == _WIRE_VARINT:
        return _read_varint(buf, pos, end)[1]
    if wire == _WIRE_LEN:
        n, pos = _read_len(buf, pos, end, "length-delimited field")
        return pos + n
    size = {_WIRE_I64: 8, _WIRE_I32: 4}.get(wire)
    if size is None:
        raise _Corrupt(key_at, f"invalid or unsupported wire type {wire}")
    if pos + size > end:
        raise _Corrupt(key_at, f"fixed-width field of {size} bytes runs past the end of its container")
    return pos + size


def _read_key(buf: Any, pos: int, end: int) -> tuple[int, int, int]:
    """Read a field key; return ``(field_number, wire_type, new_pos)``."""
    key_at = pos
    key, pos = _read_varint(buf, pos, end)
    number, wire = key >> 3, key & 7
    if number == 0:
        raise _Corrupt(key_at, "field number 0 (not a protobuf message)")
    return number, wire, pos


def _decode_str(buf: Any, pos: int, n: int, what: str) -> str:
    try:
        return bytes(buf[pos : pos + n]).decode("utf-8")
    except UnicodeDecodeError as err:
        raise _Corrupt(pos, f"{what} is not valid UTF-8") from err


def _encode_varint(value: int) -> bytes:
    """Encode a varint; negative values use the 10-byte two's-complement form of int64."""
    if value < 0:
        value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


# ---------------------------------------------------------------------------------------------------------------------
# parsing


def _read_str(buf: Any, pos: int, end: int, what: str) -> tuple[str, int]:
    """Read a length-delimited UTF-8 string field; return ``(text, position after it)``."""
    n, pos = _read_len(buf, pos, end, what)
    return _decode_str(buf, pos, n, what), pos + n


def _int64(value: int) -> int:
    """A varint read as unsigned 64-bit, as the signed ``int64`` protobuf stores."""
    return value - (1 << 64) if value >= 1 << 63 else value


def _parse_tensor(buf: Any, pos: int, end: int) -> tuple[tuple[int, ...], str | None, int, int]:
    """Parse a ``TensorProto``; return ``(dims, tensor_type, content_offset, content_length)``."""
    dims: list[int] = []
    tensor_type: str | None = None
    content = (pos, 0)
    while pos < end:
        key_at = pos
        number, wire, pos = _read_key(buf, pos, end)
        if number == 1 and wire == _WIRE_VARINT:
            value, pos = _read_varint(buf, pos, end)
            dims.append(_int64(value))
        elif number == 1 and wire == _WIRE_LEN:  # packed dims (not written by MindSpore; accepted)
            n, pos = _read_len(buf, pos, end, "packed dims")
            stop = pos + n
            while pos < stop:
                value, pos = _read_varint(buf, pos, stop)
                dims.append(_int64(value))
        elif number == 2 and wire == _WIRE_LEN:
            tensor_type, pos = _read_str(buf, pos, end, "tensor_type")
        elif number == 3 and wire == _WIRE_LEN:
            n, pos = _read_len(buf, pos, end, "tensor_content")
            content = (pos, n)
            pos += n
        else:
            pos = _skip_field(buf, pos, end, wire, key_at)
    return tuple(dims), tensor_type, content[0], content[1]


def _parse_value(buf: Any, pos: int, end: int) -> tuple[str, tuple[tuple[int, ...], str, int, int] | None]:
    """Parse a ``Checkpoint.Value``; return ``(tag, tensor)`` with ``tensor=None`` for map tensors."""
    start = pos
    tag: str | None = None
    tensor = None
    has_map = False
    while pos < end:
        key_at = pos
        number, wire, pos = _read_key(buf, pos, end)
        if number == 1 and wire == _WIRE_LEN:
            tag, pos = _read_str(buf, pos, end, "tag")
        elif number == 2 and wire == _WIRE_LEN:
            n, pos = _read_len(buf, pos, end, "tensor")
            dims, tensor_type, c_off, c_len = _parse_tensor(buf, pos, pos + n)
            if tensor_type is None:
                raise _Corrupt(pos, "tensor without tensor_type")
            tensor = (dims, tensor_type, c_off, c_len)
            pos += n
        elif number == 3 and wire == _WIRE_LEN:  # MapTensorProto: hash-map parameter, not supported
            has_map = True
            pos = _skip_field(buf, pos, end, wire, key_at)
        else:
            pos = _skip_field(buf, pos, end, wire, key_at)
    if tag is None:
        raise _Corrupt(start, "Checkpoint.Value without a tag")
    if tensor is None and not has_map:
        raise _Corrupt(start, f"Checkpoint.Value {tag!r} holds no tensor")
    return tag, tensor


def _scan(buf: Any, end: int) -> list[_Entry]:
    """Parse the top-level ``Checkpoint`` in ``buf[:end]`` into logical tensors (equal-tag runs joined)."""
    entries: list[_Entry] = []
    seen: dict[str, int] = {}
    previous_tag: str | None = None
    pos = 0
    while pos < end:
        key_at = pos
        number, wire, pos = _read_key(buf, pos, end)
        if not (number == 1 and wire == _WIRE_LEN):
            pos = _skip_field(buf, pos, end, wire, key_at)
            continue
        n, pos = _read_len(buf, pos, end, "Checkpoint.Value")
        tag, tensor = _parse_value(buf, pos, pos + n)
        pos += n
        if tensor is None:  # map tensor: skipped, but it still ends a run of chunks
            previous_tag = None
            continue
        dims, tensor_type, c_off, c_len = tensor
        if tag == previous_tag:
            entry = entries[-1]
            if (dims, tensor_type) != (entry.dims, entry.type):
                raise _Corrupt(
                    key_at,
                    f"chunk of {tag!r} has dims {list(dims)} / type {tensor_type!r}, but its first chunk at byte "
                    f"{entry.offset} has dims {list(entry.dims)} / type {entry.type!r}",
                )
            entry.chunks.append((c_off, c_len))
            continue
        if tag in seen:
            raise _Corrupt(key_at, f"tag {tag!r} appears again after other tags (first at byte {seen[tag]})")
        seen[tag] = key_at
        entries.append(_Entry(tag, dims, tensor_type, key_at, [(c_off, c_len)]))
        previous_tag = tag
    return entries


@contextlib.contextmanager
def _open_checkpoint(path: str | os.PathLike[str], verify_crc: bool) -> Iterator[tuple[mmap.mmap, int, str]]:
    """Memory-map ``path``; yield ``(buffer, end_of_protobuf_data, display_name)`` after the trailer check."""
    name = os.fspath(path)
    if not Path(name).exists():
        raise FileNotFoundError(f"MindSpore checkpoint {name!r} does not exist.")
    with open(name, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise ValueError(f"{name!r} is empty (0 bytes): not a MindSpore checkpoint, or a truncated one.")
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        end = size
        if size >= _TRAILER_LEN and mm[size - _TRAILER_LEN : size - 10] == _CRC_MARKER:
            end = size - _TRAILER_LEN
            if verify_crc:
                stored = int.from_bytes(mm[size - 10 : size], "big")
                with memoryview(mm) as view, view[:end] as body:
                    computed = zlib.crc32(body)
                if stored != computed:
                    raise ValueError(
                        f"{name!r}: CRC check failed (trailer at byte {end} stores {stored}, data gives "
                        f"{computed}); the MindSpore checkpoint is corrupt."
                    )
        yield mm, end, name
    finally:
        with contextlib.suppress(BufferError):  # arrays returned with copy=False keep the map alive
            mm.close()


def _scan_file(mm: mmap.mmap, end: int, name: str) -> list[_Entry]:
    hint = ""
    if mm[:4] == b"PK\x03\x04":
        hint = " The file is a zip archive (a PyTorch file?), not a MindSpore checkpoint."
    elif mm[:1] == b"\x80":
        hint = " The file looks like a Python pickle (a PyTorch file?), not a MindSpore checkpoint."
    try:
        entries = _scan(mm, end)
    except _Corrupt as err:
        raise ValueError(
            f"{name!r} is truncated or not a valid MindSpore checkpoint: {err.reason} at byte {err.offset} "
            f"(protobuf data is {end} bytes).{hint}"
        ) from None
    if not entries:
        raise ValueError(f"{name!r} holds no tensors: not a MindSpore checkpoint (no Checkpoint.Value entries).{hint}")
    return entries


def _logical_shape(entry: _Entry, itemsize: int, name: str) -> tuple[int, ...]:
    dims = entry.dims
    if any(d < 0 for d in dims):
        raise ValueError(f"{name!r}: tensor {entry.tag!r} at byte {entry.offset} has negative dims {list(dims)}.")
    if dims == (0,) and entry.nbytes == itemsize:  # MindSpore also writes scalars as dims [0]
        return ()
    expected = math.prod(dims) * itemsize
    if expected != entry.nbytes:
        raise ValueError(
            f"{name!r}: tensor {entry.tag!r} at byte {entry.offset} ({entry.type} {list(dims)}) needs {expected} "
            f"bytes but the file holds {entry.nbytes}; the checkpoint is truncated or corrupt."
        )
    return dims


def _gather(mm: mmap.mmap, entry: _Entry) -> np.ndarray:
    """Return the content bytes of ``entry`` as a uint8 array (a zero-copy view when there is one chunk)."""
    if len(entry.chunks) == 1:
        offset, n = entry.chunks[0]
        return np.frombuffer(mm, dtype=np.uint8, count=n, offset=offset)
    out = np.empty(entry.nbytes, dtype=np.uint8)
    pos = 0
    for offset, n in entry.chunks:
        out[pos : pos + n] = np.frombuffer(mm, dtype=np.uint8, count=n, offset=offset)
        pos += n
    return out


def _decode(mm: mmap.mmap, entry: _Entry, name: str, copy: bool) -> np.ndarray:
    """Decode one logical tensor into a numpy array in native byte order."""
    kind = entry.type
    if kind in _NUMPY_TYPES:
        dtype = np.dtype(_NUMPY_TYPES[kind])
        shape = _logical_shape(entry, dtype.itemsize, name)
        raw = _gather(mm, entry)
        array = raw.view(dtype).reshape(shape)
        if not dtype.isnative:
            return array.astype(dtype.newbyteorder("="))
        if copy and len(entry.chunks) == 1:
            return array.copy()
        return array
    if kind == "BFloat16":  # no numpy dtype: widen to float32 (bfloat16 = upper half of a float32)
        shape = _logical_shape(entry, 2, name)
        bits = _gather(mm, entry).view("<u2").astype(np.uint32)
        return (bits << 16).view(np.float32).reshape(shape)
    if kind == "str":  # numpy unicode: 4 bytes per character, UTF-32LE
        raw = _gather(mm, entry)
        if raw.size % 4:
            raise ValueError(f"{name!r}: string {entry.tag!r} at byte {entry.offset} has {raw.size} bytes, not 4·n.")
        text = raw.tobytes().decode("utf-32-le") if raw.size else ""
        return np.array(text)
    if kind == "random_op":  # opaque RNG state
        return _gather(mm, entry).copy()
    raise ValueError(
        f"{name!r}: tensor {entry.tag!r} at byte {entry.offset} has unsupported tensor_type {kind!r} "
        f"(supported: {sorted([*_NUMPY_TYPES, *_SPECIAL_TYPES])})."
    )


def _selector(keys: KeySelector) -> tuple[Callable[[str], bool], set[str] | None]:
    if keys is None:
        return (lambda tag: True), None
    if callable(keys):
        return keys, None
    if isinstance(keys, str | bytes):
        raise TypeError("`keys` must be a collection of names or a callable, not a single string.")
    wanted = set(keys)
    return wanted.__contains__, wanted


def read_mindspore_ckpt(
    path: str | os.PathLike[str],
    *,
    keys: KeySelector = None,
    verify_crc: bool = True,
    copy: bool = True,
) -> dict[str, np.ndarray]:
    """Read a MindSpore ``.ckpt`` file into numpy arrays, without MindSpore.

    Parameters
    ----------
    path
        The checkpoint file.
    keys
        Which tensors to decode: ``None`` (all), a collection of tags (each must exist), or a callable
        ``tag -> bool``. Tensors that are not selected are skipped without being decoded, so optimizer moments
        can be left on disk.
    verify_crc
        If the file ends with MindSpore's ``crc_num`` trailer, check its CRC32 (the trailer is stripped either
        way).
    copy
        Return arrays that own their memory (default). With ``copy=False`` single-chunk tensors are read-only
        views of the memory-mapped file, which stays mapped as long as any of them is alive.

    Returns
    -------
    dict[str, numpy.ndarray]
        Tag -> array, in file order. Dtypes map one to one (``Float16`` -> ``float16``, ``Int64`` -> ``int64``,
        ``Bool`` -> ``bool``, ...) except ``BFloat16``, which numpy lacks and which is widened exactly to
        ``float32``. ``str`` entries become 0-d unicode arrays, ``random_op`` entries 1-d ``uint8`` arrays of
        the raw bytes. Scalars (empty ``dims``, or ``dims == [0]`` with one element of data) have shape ``()``.
        Chunked tensors (consecutive entries with the same tag) are joined. Map tensors are skipped.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    KeyError
        If ``keys`` names tags that are not in the file.
    ValueError
        If the file is empty, truncated or corrupt (the message names the file and the byte offset), fails its
        CRC check, repeats a tag non-consecutively, or holds a tensor type this reader does not know.
    """
    accept, wanted = _selector(keys)
    with _open_checkpoint(path, verify_crc) as (mm, end, name):
        entries = _scan_file(mm, end, name)
        if wanted is not None:
            missing = sorted(wanted - {e.tag for e in entries})
            if missing:
                raise KeyError(f"{name!r} has no tensor(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}.")
        return {e.tag: _decode(mm, e, name, copy) for e in entries if accept(e.tag)}


def inspect_mindspore_ckpt(path: str | os.PathLike[str]) -> dict[str, tuple[tuple[int, ...], str]]:
    """List the tensors of a MindSpore ``.ckpt`` file without decoding them.

    Parameters
    ----------
    path
        The checkpoint file.

    Returns
    -------
    dict[str, tuple[tuple[int, ...], str]]
        Tag -> ``(dims, tensor_type)`` in file order (chunks joined; ``dims`` as stored). The CRC trailer, if
        any, is not verified (use :func:`read_mindspore_ckpt` for that).

    Raises
    ------
    FileNotFoundError, ValueError
        As :func:`read_mindspore_ckpt`.
    """
    with _open_checkpoint(path, verify_crc=False) as (mm, end, name):
        return {e.tag: (e.dims, e.type) for e in _scan_file(mm, end, name)}


# ---------------------------------------------------------------------------------------------------------------------
# writing


def _as_numpy(tag: str, value: Any) -> tuple[str, tuple[int, ...], np.ndarray | bytes]:
    """Convert a value to ``(tensor_type, dims, content)``; content is a 1-d uint8 array or bytes."""
    if isinstance(value, str | np.str_):
        return "str", (), str(value).encode("utf-32-le")
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        import torch

        tensor = value.detach().to("cpu").contiguous()
        if tensor.dtype == torch.bfloat16:
            bits = tensor.view(torch.int16).numpy().view(np.uint16)
            return "BFloat16", tuple(bits.shape), np.ascontiguousarray(bits, dtype="<u2").reshape(-1).view(np.uint8)
        value = tensor.numpy()
    array = np.asarray(value)
    if array.dtype.kind == "U" and array.ndim == 0:
        return "str", (), str(array[()]).encode("utf-32-le")
    if array.dtype.name == "bfloat16":  # e.g. ml_dtypes.bfloat16
        bits = array.view(np.uint16)
        return "BFloat16", tuple(bits.shape), np.ascontiguousarray(bits, dtype="<u2").reshape(-1).view(np.uint8)
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder != "|" else array.dtype
    tensor_type = _TYPE_OF_NUMPY.get(little.str)
    if tensor_type is None:
        raise TypeError(
            f"Cannot write {tag!r}: dtype {array.dtype} has no MindSpore equivalent "
            f"(supported: bool, (u)int8-64, float16/32/64, bfloat16, str)."
        )
    content = np.ascontiguousarray(array, dtype=little).reshape(-1).view(np.uint8)
    return tensor_type, tuple(int(d) for d in array.shape), content


def _value_header(tag: bytes, dims: tuple[int, ...], tensor_type: bytes, content_len: int) -> bytes:
    """Encode a ``Checkpoint.value`` entry up to (excluding) its ``tensor_content`` bytes."""
    tensor_head = b"".join(b"\x08" + _encode_varint(d) for d in dims)
    tensor_head += b"\x12" + _encode_varint(len(tensor_type)) + tensor_type
    tensor_head += b"\x1a" + _encode_varint(content_len)
    tensor_len = len(tensor_head) + content_len
    value_head = b"\x0a" + _encode_varint(len(tag)) + tag + b"\x12" + _encode_varint(tensor_len) + tensor_head
    value_len = len(value_head) + content_len
    return b"\x0a" + _encode_varint(value_len) + value_head


def write_mindspore_ckpt(
    path: str | os.PathLike[str],
    tensors: Mapping[str, Any],
    *,
    chunk_bytes: int | None = None,
    crc: bool = False,
    overwrite: bool = False,
) -> None:
    """Write tensors as a MindSpore ``.ckpt`` file, without MindSpore.

    The bytes are those MindSpore's own ``save_checkpoint`` produces for the same tensors: one
    ``Checkpoint.Value`` per tensor (or per chunk), in mapping order, little-endian C-order content, non-packed
    ``dims``. The file is written atomically (temporary file in the same directory, then :func:`os.replace`).

    Parameters
    ----------
    path
        Destination file (its directory must exist).
    tensors
        Tag -> value. Values may be numpy arrays, numpy/Python scalars, torch tensors (including
        ``torch.bfloat16``, written as ``BFloat16``), ``ml_dtypes.bfloat16`` arrays, or ``str`` (written as
        MindSpore's ``str`` type). Supported dtypes: bool, (u)int8/16/32/64, float16/32/64, bfloat16.
    chunk_bytes
        Split tensor contents larger than this many bytes into consecutive equal-tag entries, as MindSpore does
        above 512 MiB (the default, ``None``). Strings are never split.
    crc
        Append the ``crc_num`` trailer (CRC32 of the file), as newer MindSpore versions do with
        ``crc_check=True``.
    overwrite
        Replace an existing file at ``path``; without it, an existing file is a ``FileExistsError`` raised before
        anything is written.

    Raises
    ------
    TypeError
        If a tag is not a non-empty string or a value has an unsupported dtype.
    ValueError
        If ``tensors`` is empty or ``chunk_bytes`` is not positive.
    """
    from sthinge._utils import _check_output_path

    _check_output_path("path", path, overwrite=overwrite)
    if chunk_bytes is None:
        chunk_bytes = SLICE_BYTES
    if isinstance(chunk_bytes, bool) or not isinstance(chunk_bytes, int) or chunk_bytes <= 0:
        raise ValueError(f"`chunk_bytes` must be a positive integer, got {chunk_bytes!r}.")
    if not tensors:
        raise ValueError("`tensors` is empty: a MindSpore checkpoint needs at least one tensor.")
    converted = []
    for tag, value in tensors.items():
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"Checkpoint tags must be non-empty strings, got {tag!r}.")
        converted.append((tag.encode("utf-8"), *_as_numpy(tag, value)))

    checksum = 0
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:

        def emit(data: Any) -> None:
            nonlocal checksum
            fh.write(data)
            if crc:
                checksum = zlib.crc32(data, checksum)

        for tag, tensor_type, dims, content in converted:
            type_bytes = tensor_type.encode("ascii")
            total = len(content)
            if tensor_type == "str" or total <= chunk_bytes:
                bounds = [(0, total)]
            else:
                bounds = [(s, min(s + chunk_bytes, total)) for s in range(0, total, chunk_bytes)]
            view = memoryview(content)
            for start, stop in bounds:
                emit(_value_header(tag, dims, type_bytes, stop - start))
                emit(view[start:stop])
        if crc:
            fh.write(_CRC_MARKER + checksum.to_bytes(10, "big"))
