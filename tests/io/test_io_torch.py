"""Safe torch loading and atomic writes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sthinge.io import atomic_save, atomic_write, safe_torch_load  # noqa: E402


class _CreatesFile:
    """Unpickling this calls ``open(target, "w")``: a stand-in for arbitrary code execution."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_round_trip(tmp_path):
    obj = {
        "w": torch.arange(6.0).reshape(2, 3),
        "meta": {"epoch": 3, "name": "x", "eps": 1e-7, "ok": None},
        "list": [torch.ones(1, dtype=torch.bfloat16), 2],
    }
    atomic_save(obj, tmp_path / "a.pt")
    out = safe_torch_load(tmp_path / "a.pt")
    assert torch.equal(out["w"], obj["w"]) and out["meta"] == obj["meta"]
    assert out["list"][0].dtype == torch.bfloat16 and out["list"][1] == 2
    assert safe_torch_load(str(tmp_path / "a.pt"), mmap=True)["w"].sum() == 15


def test_missing_directory_and_empty(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safe_torch_load(tmp_path / "nope.pt")
    with pytest.raises(IsADirectoryError):
        safe_torch_load(tmp_path)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*empty"):
        safe_torch_load(tmp_path / "empty.pt")


@pytest.mark.parametrize("zipfile_format", [True, False])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_files(tmp_path, zipfile_format, fraction):
    torch.save({"w": torch.randn(50, 20)}, tmp_path / "full.pt", _use_new_zipfile_serialization=zipfile_format)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(ValueError, match=r"cut\.pt.*(truncated|corrupt)"):
        safe_torch_load(tmp_path / "cut.pt")


def test_garbage_file(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"this is not a torch file at all")
    with pytest.raises(ValueError, match=r"junk\.pt.*not a valid PyTorch file"):
        safe_torch_load(tmp_path / "junk.pt")


def test_malicious_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    torch.save({"w": torch.ones(2), "payload": _CreatesFile(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(ValueError, match=r"Refusing to load .*evil\.pt.*arbitrary Python objects") as info:
        safe_torch_load(tmp_path / "evil.pt")
    assert "weights_only=False" in str(info.value) and "open" in str(info.value)
    assert not marker.exists()


def test_atomic_save_keeps_old_file_on_failure(tmp_path):
    atomic_save({"a": torch.zeros(1)}, tmp_path / "m.pt")
    before = (tmp_path / "m.pt").read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails (exact type varies)
        atomic_save({"a": lambda: 1}, tmp_path / "m.pt")
    assert (tmp_path / "m.pt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]
    atomic_save({"a": torch.ones(1)}, tmp_path / "m.pt")
    assert safe_torch_load(tmp_path / "m.pt")["a"].item() == 1.0


def test_atomic_write(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_write(target) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        tmp.write_text("one")
        assert not target.exists()
    assert target.read_text() == "one"

    with pytest.raises(RuntimeError, match="interrupted"), atomic_write(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "one"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]

    with pytest.raises(FileNotFoundError, match="Nothing was written"), atomic_write(target):
        pass
    assert target.read_text() == "one"
    with pytest.raises(FileNotFoundError, match="does not exist"), atomic_write(tmp_path / "no" / "dir.txt"):
        pass
    with pytest.raises(IsADirectoryError), atomic_write(tmp_path):
        pass
