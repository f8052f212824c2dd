"""Atomic file replacement shared by the writers in :mod:`sthinge.io` (no third-party imports)."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_write"]


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    """Flush ``path`` (a file or a directory) to disk; best effort (some file systems refuse)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:  # pragma: no cover - platform dependent
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - platform dependent
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[Path]:
    """Write a file atomically: yield a temporary path beside ``path``, then move it onto ``path``.

    The caller writes the complete file to the yielded path (which does not exist yet; it lies in the same
    directory as ``path`` so that the final :func:`os.replace` is atomic). When the ``with`` block exits
    normally, the temporary file replaces ``path``: readers see either the old file or the new one, never a
    partial write. When the block raises, the temporary file is removed, ``path`` is left untouched and the
    exception propagates.

    Parameters
    ----------
    path
        Destination file. Its parent directory must exist.
    fsync
        Flush the new file (and, best effort, its directory) to disk before and after the replacement.

    Yields
    ------
    Path
        The temporary path to write to.

    Raises
    ------
    FileNotFoundError
        If the parent directory of ``path`` does not exist, or if the block finished without creating the
        temporary file.
    IsADirectoryError
        If ``path`` is an existing directory.

    Examples
    --------
    >>> with atomic_write("table.csv") as tmp:  # doctest: +SKIP
    ...     df.to_csv(tmp)
    """
    path = Path(os.fspath(path))
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise FileNotFoundError(f"Cannot write {str(path)!r}: directory {str(parent)!r} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"Cannot write {str(path)!r}: it is an existing directory.")
    tmp = parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"Nothing was written to the temporary file for {str(path)!r}.")
        if fsync:
            _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if (
            isinstance(err, OSError)
            and err.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
            and err.filename is not None
            and Path(os.fspath(err.filename)) == tmp
        ):
            # name the destination, not the hidden temporary file beside it
            raise PermissionError(
                err.errno, f"Cannot write {str(path)!r}: folder {str(parent)!r} is not writable ({err.strerror})"
            ) from None
        raise
    if fsync:
        _fsync_path(parent, directory=True)
