"""Safe loading and atomic saving of PyTorch files."""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

from sthinge.io._atomic import atomic_write

__all__ = ["atomic_save", "atomic_write", "safe_torch_load"]

_REFUSED = re.compile(r"unsupported (global|class)|not an allowed global|allowlist", re.IGNORECASE)


def _unpickler_detail(message: str) -> str:
    """The informative part of torch's weights-only error message."""
    match = re.search(r"WeightsUnpickler error:\s*(.*?)(\. Please use|\n|$)", message)
    return match.group(1).strip() if match else message.strip().splitlines()[0] if message.strip() else ""


def safe_torch_load(path: str | os.PathLike[str], *, map_location: Any = "cpu", mmap: bool = False) -> Any:
    """Load a PyTorch file with ``weights_only=True``, turning failures into clear errors.

    Only tensors and plain containers (dict, list, tuple, str, int, float, bool, None, ...) are unpickled; a
    file that needs any other Python object is refused instead of executing code from it.

    Parameters
    ----------
    path
        A file written by :func:`torch.save`.
    map_location
        Where to put the tensors (default ``"cpu"``).
    mmap
        Memory-map the tensor storages instead of reading them (zip-format files only).

    Returns
    -------
    Any
        The unpickled object.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    IsADirectoryError
        If ``path`` is a directory.
    ValueError
        If the file is empty, truncated or corrupt, or if it contains arbitrary Python objects (refused: only
        load such a file with ``torch.load(..., weights_only=False)`` if you trust its source). The message
        names the file.
    """
    import torch

    name = os.fspath(path)
    p = Path(name)
    if not p.exists():
        raise FileNotFoundError(f"PyTorch file {name!r} does not exist.")
    if p.is_dir():
        raise IsADirectoryError(f"{name!r} is a directory, not a PyTorch file.")
    if p.stat().st_size == 0:
        raise ValueError(f"{name!r} is empty (0 bytes): a truncated or failed write, not a PyTorch file.")
    try:
        return torch.load(name, map_location=map_location, weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        message = str(err)
        if _REFUSED.search(message):
            raise ValueError(
                f"Refusing to load {name!r}: it contains arbitrary Python objects ({_unpickler_detail(message)}), "
                "and unpickling them could run code from the file. sthinge only loads tensors and plain containers "
                "(weights_only=True). If you trust the file's source, load it yourself with "
                "torch.load(path, weights_only=False) and pass the resulting state dict on."
            ) from None
        raise ValueError(f"{name!r} is truncated or not a valid PyTorch file: {_unpickler_detail(message)}") from err
    except (FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except (
        RuntimeError,
        EOFError,
        KeyError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
        OverflowError,
        MemoryError,
        OSError,
    ) as err:
        # a truncated zip can surface as OSError(EINVAL) from torch's reader
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        kind = type(err).__name__
        raise ValueError(f"{name!r} is truncated or not a valid PyTorch file ({kind}: {reason}).") from err


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """:func:`torch.save` ``obj`` to ``path`` atomically.

    The object is written to a temporary file in the same directory, which then replaces ``path`` with
    :func:`os.replace`; if saving fails, ``path`` is left as it was.

    Parameters
    ----------
    obj
        Anything :func:`torch.save` accepts (keep it to tensors and plain containers so that
        :func:`safe_torch_load` can read it back).
    path
        Destination file; its directory must exist.
    """
    import torch

    # through a file object: the archive inside is then always named "archive", not after the temporary file, so
    # the same object gives the same bytes (and the same sha256)
    with atomic_write(path) as tmp, open(tmp, "wb") as fh:
        torch.save(obj, fh)
