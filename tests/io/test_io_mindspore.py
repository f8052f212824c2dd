"""MindSpore ``.ckpt`` reader/writer (CellFM's published checkpoint format)."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sthinge.io import inspect_mindspore_ckpt, read_mindspore_ckpt, write_mindspore_ckpt
from sthinge.io._mindspore import _encode_varint

# ---------------------------------------------------------------------------------------------------------------------
# helpers: hand-encoded protobuf pieces (independent of the writer under test)


def _len_field(number: int, payload: bytes) -> bytes:
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def _tensor(dims, tensor_type: str, content: bytes, *, packed: bool = False, extra: bytes = b"") -> bytes:
    if packed:
        body = _len_field(1, b"".join(_encode_varint(d) for d in dims))
    else:
        body = b"".join(b"\x08" + _encode_varint(d) for d in dims)
    return body + extra + _len_field(2, tensor_type.encode()) + _len_field(3, content)


def _value(tag: str, tensor: bytes, extra: bytes = b"") -> bytes:
    return _len_field(1, _len_field(1, tag.encode()) + extra + _len_field(2, tensor))


def _value_boundaries(data: bytes) -> set[int]:
    """Offsets at which a top-level ``Checkpoint.Value`` starts or the data ends."""
    out, pos = {0}, 0
    while pos < len(data):
        assert data[pos] == 0x0A
        pos += 1
        n = shift = 0
        while True:
            b = data[pos]
            pos += 1
            n |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        pos += n
        out.add(pos)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# the byte layout of a MindSpore checkpoint


def test_byte_prefix_matches_method(tmp_path):
    # A MindSpore checkpoint of one Float32 tensor starts
    # `0a 43 | 0a 08 "gene_emb" | 12 37 | 08 11 08 08 | 12 07 "Float32" | 1a 28 <40 bytes>`.
    # The lengths are consistent (T = 4 + 9 + 2 + 40 = 55 = 0x37, V = 10 + 2 + 55 = 67 = 0x43), so 40 bytes of
    # Float32 content = 10 elements: the dims must multiply to 10, e.g. [5, 2] -> `08 05 08 02`.
    x = np.arange(10, dtype=np.float32).reshape(5, 2)
    write_mindspore_ckpt(tmp_path / "a.ckpt", {"gene_emb": x})
    data = (tmp_path / "a.ckpt").read_bytes()
    expected = (
        bytes.fromhex("0a43")
        + bytes.fromhex("0a08")
        + b"gene_emb"
        + bytes.fromhex("1237")
        + bytes.fromhex("08050802")
        + bytes.fromhex("1207")
        + b"Float32"
        + bytes.fromhex("1a28")
        + x.tobytes()
    )
    assert data == expected
    np.testing.assert_array_equal(read_mindspore_ckpt(tmp_path / "a.ckpt")["gene_emb"], x)


def test_byte_prefix_17x8_uses_multibyte_lengths(tmp_path):
    # a real [17, 8] Float32 tensor has 544 bytes of content: the lengths become 2-byte varints
    # (544 = a0 04; T = 4 + 9 + 3 + 544 = 560 = b0 04; V = 10 + 3 + 560 = 573 = bd 04).
    x = np.random.default_rng(0).standard_normal((17, 8)).astype(np.float32)
    write_mindspore_ckpt(tmp_path / "a.ckpt", {"gene_emb": x})
    data = (tmp_path / "a.ckpt").read_bytes()
    head = (
        bytes.fromhex("0abd04")
        + bytes.fromhex("0a08")
        + b"gene_emb"
        + bytes.fromhex("12b004")
        + bytes.fromhex("08110808")
        + bytes.fromhex("1207")
        + b"Float32"
        + bytes.fromhex("1aa004")
    )
    assert data == head + x.tobytes()
    assert len(data) == 3 + 573


def test_literal_prefix_with_dims_17x8_is_refused(tmp_path):
    # the prefix exactly as quoted (dims [17, 8] with only 40 bytes) is inconsistent: a clear error, not garbage
    content = np.arange(10, dtype=np.float32).tobytes()
    raw = _value("gene_emb", _tensor([17, 8], "Float32", content))
    assert raw[:2] == bytes.fromhex("0a43") and raw[12:18] == bytes.fromhex("123708110808")
    (tmp_path / "bad.ckpt").write_bytes(raw)
    with pytest.raises(ValueError, match=r"bad\.ckpt.*gene_emb.*needs 544 bytes.*holds 40"):
        read_mindspore_ckpt(tmp_path / "bad.ckpt")


# ---------------------------------------------------------------------------------------------------------------------
# round trips

_DTYPES = [
    "bool",
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "float16",
    "float32",
    "float64",
]
_TYPE_STRINGS = dict(
    zip(
        _DTYPES,
        [
            "Bool",
            "Int8",
            "UInt8",
            "Int16",
            "UInt16",
            "Int32",
            "UInt32",
            "Int64",
            "UInt64",
            "Float16",
            "Float32",
            "Float64",
        ],
    )
)


def _sample(dtype: str, shape, rng) -> np.ndarray:
    dt = np.dtype(dtype)
    if dt.kind == "b":
        return rng.random(shape) > 0.5
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max, size=shape, dtype=dt, endpoint=True)
    return rng.standard_normal(shape).astype(dt)


@pytest.mark.parametrize("dtype", _DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (3,), (2, 3, 4), (1, 1, 5)])
def test_round_trip_dtypes(tmp_path, dtype, shape):
    rng = np.random.default_rng(1)
    x = _sample(dtype, shape, rng)
    write_mindspore_ckpt(tmp_path / "t.ckpt", {"x": x, "y.z": np.float32(2.5)})
    out = read_mindspore_ckpt(tmp_path / "t.ckpt")
    assert list(out) == ["x", "y.z"]
    assert out["x"].dtype == x.dtype and out["x"].shape == x.shape
    np.testing.assert_array_equal(out["x"], x)
    assert out["y.z"].shape == () and out["y.z"] == np.float32(2.5)
    assert inspect_mindspore_ckpt(tmp_path / "t.ckpt")["x"] == (shape, _TYPE_STRINGS[dtype])


def test_round_trip_python_scalars_noncontiguous_and_big_endian(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    tensors = {
        "step": 7,
        "lr": 1e-3,
        "flag": True,
        "strided": base[:, ::2],
        "transposed": base.T,
        "big_endian": base.astype(">f4"),
    }
    write_mindspore_ckpt(tmp_path / "t.ckpt", tensors)
    out = read_mindspore_ckpt(tmp_path / "t.ckpt")
    assert out["step"].dtype == np.int64 and out["step"][()] == 7
    assert out["lr"].dtype == np.float64 and out["lr"][()] == 1e-3
    assert out["flag"].dtype == np.bool_ and out["flag"][()]
    np.testing.assert_array_equal(out["strided"], base[:, ::2])
    np.testing.assert_array_equal(out["transposed"], base.T)
    assert out["big_endian"].dtype == np.float32 and out["big_endian"].dtype.isnative
    np.testing.assert_array_equal(out["big_endian"], base.astype(np.float32))


def test_bfloat16_round_trip(tmp_path):
    torch = pytest.importorskip("torch")
    x = torch.randn(3, 5, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    write_mindspore_ckpt(tmp_path / "b.ckpt", {"w": x, "s": torch.tensor(1.5, dtype=torch.bfloat16)})
    assert inspect_mindspore_ckpt(tmp_path / "b.ckpt") == {"w": ((3, 5), "BFloat16"), "s": ((), "BFloat16")}
    out = read_mindspore_ckpt(tmp_path / "b.ckpt")
    assert out["w"].dtype == np.float32
    np.testing.assert_array_equal(out["w"], x.float().numpy())
    assert out["s"].shape == () and out["s"] == 1.5
    # and the bytes are the upper halves of the float32 values
    raw = (tmp_path / "b.ckpt").read_bytes()
    assert x.view(torch.int16).numpy().tobytes() in raw


def test_torch_tensors_are_accepted(tmp_path):
    torch = pytest.importorskip("torch")
    t = torch.arange(6, dtype=torch.float16).reshape(2, 3)
    write_mindspore_ckpt(tmp_path / "t.ckpt", {"t": t, "i": torch.tensor([1, 2], dtype=torch.int32)})
    out = read_mindspore_ckpt(tmp_path / "t.ckpt")
    assert out["t"].dtype == np.float16 and out["i"].dtype == np.int32
    np.testing.assert_array_equal(out["t"], t.numpy())


def test_str_and_random_op(tmp_path):
    write_mindspore_ckpt(tmp_path / "s.ckpt", {"note": "héllo ✓", "empty": ""})
    out = read_mindspore_ckpt(tmp_path / "s.ckpt")
    assert str(out["note"]) == "héllo ✓" and str(out["empty"]) == ""
    assert inspect_mindspore_ckpt(tmp_path / "s.ckpt")["note"] == ((), "str")
    (tmp_path / "r.ckpt").write_bytes(_value("rng", _tensor([3], "random_op", b"\x01\x02\x03\x04")))
    np.testing.assert_array_equal(read_mindspore_ckpt(tmp_path / "r.ckpt")["rng"], [1, 2, 3, 4])


def test_scalar_written_with_dims_zero(tmp_path):
    content = np.float32(3.25).tobytes()
    (tmp_path / "s.ckpt").write_bytes(
        _value("a", _tensor([0], "Float32", content)) + _value("b", _tensor([0], "Float32", b""))
    )
    out = read_mindspore_ckpt(tmp_path / "s.ckpt")
    assert out["a"].shape == () and out["a"] == np.float32(3.25)
    assert out["b"].shape == (0,)


def test_copy_false_gives_read_only_views(tmp_path):
    x = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_mindspore_ckpt(tmp_path / "t.ckpt", {"x": x})
    out = read_mindspore_ckpt(tmp_path / "t.ckpt", copy=False)
    np.testing.assert_array_equal(out["x"], x)
    assert not out["x"].flags.writeable
    owned = read_mindspore_ckpt(tmp_path / "t.ckpt")
    assert owned["x"].flags.writeable


# ---------------------------------------------------------------------------------------------------------------------
# chunks, trailer, selection


@pytest.mark.parametrize("chunk_bytes", [1, 7, 16, 4096])
def test_chunk_join(tmp_path, chunk_bytes):
    x = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)  # 140 bytes
    y = np.arange(3, dtype=np.int64)
    write_mindspore_ckpt(tmp_path / "c.ckpt", {"x": x, "y": y}, chunk_bytes=chunk_bytes)
    data = (tmp_path / "c.ckpt").read_bytes()
    n_values = len(_value_boundaries(data)) - 1
    assert n_values == -(-140 // chunk_bytes) + -(-24 // chunk_bytes)
    out = read_mindspore_ckpt(tmp_path / "c.ckpt")
    assert list(out) == ["x", "y"]
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["y"], y)


def test_chunks_with_different_dims_are_refused(tmp_path):
    a = _value("x", _tensor([2, 2], "Float32", b"\0" * 8))
    b = _value("x", _tensor([4], "Float32", b"\0" * 8))
    (tmp_path / "c.ckpt").write_bytes(a + b)
    with pytest.raises(ValueError, match=r"c\.ckpt.*chunk of 'x' has dims \[4\].*byte \d+"):
        read_mindspore_ckpt(tmp_path / "c.ckpt")


def test_non_consecutive_duplicate_tag_is_refused(tmp_path):
    write_mindspore_ckpt(tmp_path / "a.ckpt", {"x": np.ones(2), "y": np.ones(2)})
    raw = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "d.ckpt").write_bytes(raw + _value("x", _tensor([2], "Float64", np.ones(2).tobytes())))
    with pytest.raises(ValueError, match=r"tag 'x' appears again.*first at byte 0"):
        read_mindspore_ckpt(tmp_path / "d.ckpt")


def test_crc_trailer(tmp_path):
    x = np.arange(20, dtype=np.float32)
    write_mindspore_ckpt(tmp_path / "plain.ckpt", {"x": x})
    write_mindspore_ckpt(tmp_path / "crc.ckpt", {"x": x}, crc=True)
    plain, with_crc = (tmp_path / "plain.ckpt").read_bytes(), (tmp_path / "crc.ckpt").read_bytes()
    assert with_crc == plain + b"crc_num" + zlib.crc32(plain).to_bytes(10, "big")
    np.testing.assert_array_equal(read_mindspore_ckpt(tmp_path / "crc.ckpt")["x"], x)

    corrupt = bytearray(with_crc)
    corrupt[len(plain) - 4] ^= 0xFF  # flip a byte of the last float
    (tmp_path / "bad.ckpt").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"bad\.ckpt.*CRC check failed"):
        read_mindspore_ckpt(tmp_path / "bad.ckpt")
    out = read_mindspore_ckpt(tmp_path / "bad.ckpt", verify_crc=False)
    assert out["x"][-1] != x[-1] and np.array_equal(out["x"][:-1], x[:-1])


def test_key_selection(tmp_path):
    tensors = {"b": np.ones(1), "a": np.zeros(2), "moment1.a": np.zeros(2), "global_step": np.int32(3)}
    write_mindspore_ckpt(tmp_path / "k.ckpt", tensors)
    assert list(read_mindspore_ckpt(tmp_path / "k.ckpt")) == list(tensors)
    assert list(read_mindspore_ckpt(tmp_path / "k.ckpt", keys=["global_step", "b"])) == ["b", "global_step"]
    assert list(read_mindspore_ckpt(tmp_path / "k.ckpt", keys=lambda t: not t.startswith("moment"))) == [
        "b",
        "a",
        "global_step",
    ]
    with pytest.raises(KeyError, match="nope"):
        read_mindspore_ckpt(tmp_path / "k.ckpt", keys=["a", "nope"])
    with pytest.raises(TypeError):
        read_mindspore_ckpt(tmp_path / "k.ckpt", keys="a")


def test_unknown_type_only_fails_when_selected(tmp_path):
    raw = _value("weird", _tensor([2], "Complex64", b"\0" * 16)) + _value("ok", _tensor([1], "Int8", b"\x05"))
    (tmp_path / "u.ckpt").write_bytes(raw)
    assert read_mindspore_ckpt(tmp_path / "u.ckpt", keys=["ok"])["ok"][0] == 5
    with pytest.raises(ValueError, match=r"'weird'.*unsupported tensor_type 'Complex64'"):
        read_mindspore_ckpt(tmp_path / "u.ckpt")


# ---------------------------------------------------------------------------------------------------------------------
# robustness: unknown fields, packed dims, map tensors, corrupt and truncated files


def test_unknown_fields_are_skipped_and_packed_dims_accepted(tmp_path):
    junk = (
        _encode_varint(9 << 3 | 0)
        + _encode_varint(300)  # varint
        + _encode_varint(10 << 3 | 1)
        + b"\1" * 8  # fixed64
        + _len_field(11, b"anything")  # length-delimited
        + _encode_varint(12 << 3 | 5)
        + b"\2" * 4  # fixed32
    )
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    maptensor = _len_field(3, _len_field(1, _tensor([1], "Int64", b"\0" * 8)))
    raw = (
        junk
        + _value("x", _tensor([2, 3], "Float32", x.tobytes(), packed=True, extra=junk), extra=junk)
        + _len_field(1, _len_field(1, b"hashmap") + maptensor)
        + _value("neg", _tensor([-1], "Float32", b""))
    )
    (tmp_path / "u.ckpt").write_bytes(raw)
    out = read_mindspore_ckpt(tmp_path / "u.ckpt", keys=lambda t: t != "neg")
    assert list(out) == ["x"]
    np.testing.assert_array_equal(out["x"], x)
    with pytest.raises(ValueError, match=r"'neg'.*negative dims \[-1\]"):
        read_mindspore_ckpt(tmp_path / "u.ckpt")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x0b\x00", "invalid or unsupported wire type 3"),
        (b"\x00\x00\x00\x00", "field number 0"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "varint longer than 10 bytes"),
        (_len_field(1, _len_field(2, _tensor([1], "Int8", b"\1"))), "without a tag"),
        (_len_field(1, _len_field(1, b"t")), "holds no tensor"),
        (_len_field(1, _len_field(1, b"t") + _len_field(2, b"\x08\x01")), "without tensor_type"),
        (_len_field(1, _len_field(1, b"\xff\xfe") + _len_field(2, _tensor([1], "Int8", b"\1"))), "not valid UTF-8"),
        (b"PK\x03\x04 this is a zip", "zip archive"),
        (_len_field(5, b"abc"), "holds no tensors"),
    ],
)
def test_corrupt_files(tmp_path, raw, reason):
    (tmp_path / "bad.ckpt").write_bytes(raw)
    with pytest.raises(ValueError, match=r"bad\.ckpt") as info:
        read_mindspore_ckpt(tmp_path / "bad.ckpt")
    assert reason in str(info.value)


def test_every_truncation_is_detected(tmp_path):
    tensors = {"gene_emb": np.arange(12, dtype=np.float32).reshape(3, 4), "a": np.int64(-3), "long.name.w": np.ones(2)}
    write_mindspore_ckpt(tmp_path / "full.ckpt", tensors, chunk_bytes=20)
    data = (tmp_path / "full.ckpt").read_bytes()
    boundaries = _value_boundaries(data)
    for cut in range(1, len(data)):
        (tmp_path / "cut.ckpt").write_bytes(data[:cut])
        if cut in boundaries:  # a shorter but valid checkpoint (protobuf has no end marker)
            read_mindspore_ckpt(tmp_path / "cut.ckpt", keys=lambda t: False)
            continue
        with pytest.raises(ValueError, match=r"cut\.ckpt.*(truncated|corrupt).*byte \d+"):
            read_mindspore_ckpt(tmp_path / "cut.ckpt")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.ckpt"):
        read_mindspore_ckpt(tmp_path / "nothing.ckpt")
    (tmp_path / "empty.ckpt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.ckpt.*empty"):
        read_mindspore_ckpt(tmp_path / "empty.ckpt")


def test_writer_argument_checks(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        write_mindspore_ckpt(tmp_path / "a.ckpt", {})
    with pytest.raises(ValueError, match="chunk_bytes"):
        write_mindspore_ckpt(tmp_path / "a.ckpt", {"x": np.ones(1)}, chunk_bytes=0)
    with pytest.raises(TypeError, match="complex128"):
        write_mindspore_ckpt(tmp_path / "a.ckpt", {"x": np.ones(1, dtype=complex)})
    with pytest.raises(TypeError, match="tags"):
        write_mindspore_ckpt(tmp_path / "a.ckpt", {"": np.ones(1)})
    assert not list(tmp_path.iterdir())  # nothing left behind


def test_writer_is_atomic(tmp_path, monkeypatch):
    from sthinge.io import _mindspore

    write_mindspore_ckpt(tmp_path / "a.ckpt", {"x": np.ones(3)})
    before = (tmp_path / "a.ckpt").read_bytes()
    calls = []
    real = _mindspore._value_header

    def failing_header(*args):
        calls.append(1)
        if len(calls) == 2:  # fail after the first entry has been written to the temporary file
            raise OSError("disk full")
        return real(*args)

    monkeypatch.setattr(_mindspore, "_value_header", failing_header)
    with pytest.raises(OSError, match="disk full"):
        write_mindspore_ckpt(tmp_path / "a.ckpt", {"x": np.zeros(3), "y": np.zeros(2)}, overwrite=True)
    assert (tmp_path / "a.ckpt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]


@settings(max_examples=40, deadline=None)
@given(
    arrays=st.lists(
        st.tuples(st.sampled_from(_DTYPES), st.lists(st.integers(0, 4), max_size=3), st.integers(0, 2**32 - 1)),
        min_size=1,
        max_size=4,
    ),
    chunk=st.one_of(st.none(), st.integers(1, 64)),
)
def test_round_trip_property(tmp_path_factory, arrays, chunk):
    path = tmp_path_factory.mktemp("prop") / "p.ckpt"
    tensors = {
        f"t{i}.w": _sample(dtype, tuple(shape), np.random.default_rng(seed))
        for i, (dtype, shape, seed) in enumerate(arrays)
    }
    write_mindspore_ckpt(path, tensors, chunk_bytes=chunk)
    out = read_mindspore_ckpt(path)
    assert list(out) == list(tensors)
    for k, v in tensors.items():
        assert out[k].dtype == v.dtype and out[k].shape == v.shape
        np.testing.assert_array_equal(out[k], v)


# ---------------------------------------------------------------------------------------------------------------------
# cross-check against the official protobuf schema, built at run time


@pytest.fixture(scope="module")
def checkpoint_class():
    pytest.importorskip("google.protobuf")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    F = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="sthinge_test_checkpoint.proto", syntax="proto2")
    tensor = proto.message_type.add(name="TensorProto")
    tensor.field.add(name="dims", number=1, type=F.TYPE_INT64, label=F.LABEL_REPEATED)
    tensor.field.add(name="tensor_type", number=2, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    tensor.field.add(name="tensor_content", number=3, type=F.TYPE_BYTES, label=F.LABEL_REQUIRED)
    maptensor = proto.message_type.add(name="MapTensorProto")
    maptensor.field.add(name="tensor", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".TensorProto")
    checkpoint = proto.message_type.add(name="Checkpoint")
    value = checkpoint.nested_type.add(name="Value")
    value.field.add(name="tag", number=1, type=F.TYPE_STRING, label=F.LABEL_REQUIRED)
    value.field.add(name="tensor", number=2, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".TensorProto")
    value.field.add(
        name="maptensor", number=3, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL, type_name=".MapTensorProto"
    )
    checkpoint.field.add(
        name="value", number=1, type=F.TYPE_MESSAGE, label=F.LABEL_REPEATED, type_name=".Checkpoint.Value"
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("Checkpoint"))


def _official(checkpoint_class, entries) -> bytes:
    """Serialise ``[(tag, dims, type, content bytes), ...]`` with the protobuf package."""
    msg = checkpoint_class()
    for tag, dims, tensor_type, content in entries:
        v = msg.value.add()
        v.tag = tag
        v.tensor.dims.extend(dims)
        v.tensor.tensor_type = tensor_type
        v.tensor.tensor_content = content
    return msg.SerializeToString()


def test_writer_bytes_equal_official_serialisation(tmp_path, checkpoint_class):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6)).astype(np.float32)  # 96 bytes -> chunks of 40, 40, 16
    tensors = {
        "gene_emb": x,
        "encoder.0.post_norm1.gamma": np.ones(6, np.float16),
        "global_step": np.int32(12),
        "neg": np.array([-5, 7], dtype=np.int64),
    }
    write_mindspore_ckpt(tmp_path / "w.ckpt", tensors, chunk_bytes=40)
    raw = x.tobytes()
    entries = [("gene_emb", [4, 6], "Float32", raw[i : i + 40]) for i in (0, 40, 80)] + [
        ("encoder.0.post_norm1.gamma", [6], "Float16", np.ones(6, np.float16).tobytes()),
        ("global_step", [], "Int32", np.int32(12).tobytes()),
        ("neg", [2], "Int64", np.array([-5, 7], dtype="<i8").tobytes()),
    ]
    assert (tmp_path / "w.ckpt").read_bytes() == _official(checkpoint_class, entries)

    parsed = checkpoint_class()
    parsed.ParseFromString((tmp_path / "w.ckpt").read_bytes())
    assert [v.tag for v in parsed.value] == ["gene_emb"] * 3 + ["encoder.0.post_norm1.gamma", "global_step", "neg"]
    assert list(parsed.value[0].tensor.dims) == [4, 6]
    assert b"".join(v.tensor.tensor_content for v in parsed.value[:3]) == raw


def test_reader_parses_official_serialisation(tmp_path, checkpoint_class):
    x = np.arange(15, dtype=np.float64).reshape(3, 5)
    raw = x.tobytes()
    msg = checkpoint_class.FromString(
        _official(
            checkpoint_class,
            [
                ("x", [3, 5], "Float64", raw[:50]),
                ("x", [3, 5], "Float64", raw[50:]),
                ("b", [2], "Bool", b"\x01\x00"),
                ("s", [], "UInt16", b"\x34\x12"),
            ],
        )
    )
    m = msg.value.add()  # a map tensor entry, which the reader skips
    m.tag = "table"
    t = m.maptensor.tensor.add()
    t.dims.append(1)
    t.tensor_type = "Int64"
    t.tensor_content = b"\0" * 8
    (tmp_path / "o.ckpt").write_bytes(msg.SerializeToString())
    out = read_mindspore_ckpt(tmp_path / "o.ckpt")
    assert list(out) == ["x", "b", "s"]
    np.testing.assert_array_equal(out["x"], x)
    np.testing.assert_array_equal(out["b"], [True, False])
    assert out["s"].dtype == np.uint16 and out["s"] == 0x1234
