"""Helpers shared by ``pp``, ``tl`` and ``pl`` (table resolution, argument checks, atomic writes)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sthinge import _constants as K

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData


def _is_spatialdata(data: Any) -> bool:
    try:
        from spatialdata import SpatialData
    except ImportError:  # pragma: no cover
        return False
    return isinstance(data, SpatialData)


def _resolve_table(data: AnnData | SpatialData, table_key: str | None = None) -> tuple[AnnData, str | None]:
    """Return ``(table, key)`` for an AnnData (key ``None``) or a SpatialData object.

    For SpatialData, ``table_key=None`` picks ``"table"`` if present, else the only table; a missing key
    raises ``KeyError`` listing the tables.
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        if table_key is not None:
            raise ValueError("`table_key` only applies to SpatialData input; got an AnnData.")
        return data, None
    if _is_spatialdata(data):
        tables = list(data.tables.keys())
        if table_key is None:
            if K.TABLE_KEY in tables:
                table_key = K.TABLE_KEY
            elif len(tables) == 1:
                table_key = tables[0]
            elif not tables:
                raise KeyError("The SpatialData object holds no table; `data` needs a table with expression or spots.")
            else:
                raise KeyError(f"Several tables {tables}: pass `table_key=` to choose one.")
        if table_key not in tables:
            raise KeyError(f"`table_key` {table_key!r} not found; available tables: {tables}.")
        return data.tables[table_key], table_key
    raise TypeError(f"`data` must be an AnnData or a SpatialData object, got {type(data).__name__}.")


def _check_int(name: str, value: Any, *, low: int | None = None, high: int | None = None) -> int:
    """Check that ``value`` is an int within ``[low, high]``; raise a ``TypeError``/``ValueError`` naming ``name``."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__} {value!r}.")
    value = int(value)
    if low is not None and value < low:
        raise ValueError(f"`{name}` must be >= {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value}.")
    return value


def _check_float(
    name: str, value: Any, *, low: float | None = None, high: float | None = None, low_open: bool = False
) -> float:
    """Check that ``value`` is a finite real number in range; raise naming ``name``."""
    import math
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"`{name}` must be finite, got {value}.")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"`{name}` must be {'>' if low_open else '>='} {low}, got {value}.")
    if high is not None and value > high:
        raise ValueError(f"`{name}` must be <= {high}, got {value}.")
    return value


def _check_overwrite(what: str, exists: bool, overwrite: Any, *, flag: str = "overwrite=True") -> None:
    """The one rule of every writer: ``what`` (e.g. "`key_added` 'x': table 'x'") exists -> refuse unless ``overwrite``.

    Raises ``ValueError`` naming the thing and the flag; call it before any work or write.
    """
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False, got {overwrite!r}.")
    if exists and not overwrite:
        raise ValueError(f"{what} already exists; pass `{flag}` to replace it.")


def _check_writable_dir(name: str, folder: str | os.PathLike) -> Path:
    """Check (before any work) that files can be written in ``folder``, creating it if needed.

    Raises ``PermissionError`` / ``NotADirectoryError`` naming ``name`` and the folder (never a temp-file name).
    """
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"`{name}` {str(folder)!r} is a file, not a folder.")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _probe_write(folder)
    except OSError as err:
        raise PermissionError(f"`{name}` {str(folder)!r} is not writable ({err.strerror or err}).") from None
    return folder


def _probe_write(folder: Path) -> None:
    """Create and remove a small file in ``folder`` (raises the ``OSError`` of a folder that refuses writes).

    A real attempt rather than :func:`os.access`, which says yes to root on read-only mounts.
    """
    fd, probe = tempfile.mkstemp(prefix=".sthinge-write-check.", dir=folder)
    os.close(fd)
    os.unlink(probe)


def _nearest_existing(path: Path) -> Path:
    for parent in (path, *path.parents):
        if parent.exists():
            return parent
    return Path(".")  # pragma: no cover


def _check_output_path(
    name: str, path: str | os.PathLike, *, overwrite: Any, kind: str = "file", flag: str = "overwrite=True"
) -> Path:
    """Check an output ``path`` before any work, by the one rule of every writer.

    - ``kind="file"``: an existing file is replaced only with ``overwrite``; an existing folder never is.
    - ``kind="folder"``: an existing *non-empty* folder is refused unless ``overwrite``; an existing file never is
      replaced by a folder.
    - The nearest existing parent must be a writable folder.

    Errors name ``name`` (the argument or CLI option), the path and the flag. Returns the path.
    """
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`{name}` must be a path, got {type(path).__name__}.")
    if not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False, got {overwrite!r}.")
    path = Path(path).expanduser()
    if kind == "file":
        if path.is_dir():
            raise FileExistsError(f"`{name}` {str(path)!r} is an existing folder; give a file name.")
        if path.exists() and not overwrite:
            raise FileExistsError(f"`{name}` {str(path)!r} already exists; pass `{flag}` to replace it.")
    elif kind == "folder":
        if path.exists() and not path.is_dir():
            raise FileExistsError(
                f"`{name}` {str(path)!r} is an existing file, not a folder; it is never replaced "
                "by a folder. Choose another path."
            )
        if path.is_dir() and any(path.iterdir()) and not overwrite:
            raise FileExistsError(
                f"`{name}` {str(path)!r} is a folder that is not empty; pass `{flag}` to replace "
                "its contents, or choose another path."
            )
    else:  # pragma: no cover - programming error
        raise ValueError(kind)
    parent = _nearest_existing(path.parent if path.parent != path else path)
    if not parent.is_dir():
        raise NotADirectoryError(f"`{name}` {str(path)!r}: {str(parent)!r} is a file, not a folder.")
    try:
        _probe_write(parent)
    except OSError as err:
        raise PermissionError(
            f"`{name}` {str(path)!r} cannot be written: folder {str(parent)!r} is not writable ({err.strerror or err})."
        ) from None
    return path


def _check_names(name: str, value: Any, *, what: str = "strings", single: bool = True, hint: str = "") -> list[str]:
    """A non-empty list of names, as strings: ``value`` a sequence, or one string when ``single``.

    ``TypeError`` / ``ValueError`` naming ``name``; ``what`` says what the names are ("section names"), ``hint``
    is added to the empty-list error ("; give at least one section, or None for all").
    """
    import numpy as np
    import pandas as pd

    if isinstance(value, str) and single:
        return [value]
    if isinstance(value, str) or not isinstance(value, Sequence | np.ndarray | pd.Index):
        kind = f"a string or a list of {what}" if single else f"a list of {what}"
        raise TypeError(f"`{name}` must be {kind}, got {type(value).__name__}.")
    out = [str(v) for v in value]
    if not out:
        raise ValueError(f"`{name}` is empty{hint}.")
    return out


def _check_no_repeats(name: str, values, what: str = "section") -> None:
    """Refuse a list naming the same item twice (a typo, or work done twice); ``ValueError`` naming ``name``."""
    from collections import Counter

    repeated = [v for v, n in Counter(values).items() if n > 1]
    if repeated:
        raise ValueError(f"`{name}` names the {what}(s) {repeated} more than once; give each {what} once.")


def _removed_keywords(**replacements: str):
    """Decorator: a keyword the function no longer takes is a ``TypeError`` naming what replaces it.

    ``@_removed_keywords(copy="pass `inplace=False` to get the prediction table")``. The signature, docstring
    and annotations stay those of the function (``functools.wraps``).
    """
    import functools

    def decorate(func):
        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            for old, hint in replacements.items():
                if old in kwargs:
                    raise TypeError(f"{func.__name__}() no longer takes `{old}`: {hint}.")
            return func(*args, **kwargs)

        return wrapper

    return decorate


def _check_choice(name: str, value: Any, choices) -> Any:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}, got {value!r}.")
    return value


@contextlib.contextmanager
def _atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically, on error it is removed.

    Works for files and directories (a directory replaces an existing one only after it is complete).
    """
    import shutil

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as err:  # name the destination, not the hidden temporary folder beside it
        if isinstance(err, FileExistsError | NotADirectoryError):
            raise NotADirectoryError(f"Cannot write {str(path)!r}: {err.filename!r} is a file, not a folder.") from None
        raise PermissionError(
            f"Cannot write {str(path)!r}: folder {str(path.parent)!r} is not writable ({err.strerror or err})."
        ) from None
    target = tmp / path.name
    try:
        yield target
        if target.is_dir():
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                if old.exists():
                    shutil.rmtree(old) if old.is_dir() else old.unlink()
                os.replace(path, old)
                os.replace(target, path)
                shutil.rmtree(old) if old.is_dir() else old.unlink()
            else:
                os.replace(target, path)
        elif target.exists():
            os.replace(target, path)
        else:
            raise FileNotFoundError(f"Nothing was written to {target}.")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write_spatialdata(sdata: Any, path: Path) -> None:
    """``sdata.write(path)``, with anndata's zarr v3 sharding chosen explicitly when the user has not chosen it.

    Unless ``anndata.settings.auto_shard_zarr_v3`` is set (in Python or by its environment variable), the tables
    are written unsharded, anndata's current default; left unset, anndata warns for every array it writes that the
    default will change, which nobody running sthinge can act on.
    """
    from contextlib import nullcontext

    import anndata as ad

    settings = getattr(ad, "settings", None)
    unset = settings is not None and getattr(settings, "auto_shard_zarr_v3", False) is None
    with settings.override(auto_shard_zarr_v3=False) if unset else nullcontext():
        sdata.write(path)
