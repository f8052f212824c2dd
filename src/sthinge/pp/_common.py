"""Helpers shared by the ``pp`` functions: input resolution, sections, ``copy`` semantics, count checks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge._utils import _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"`{name}` must be a bool, got {type(value).__name__} {value!r}.")
    return bool(value)


def _check_key(name: str, value: Any, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty string{' or None' if optional else ''}, got {value!r}.")
    return value


def _copy_data(data: AnnData | SpatialData) -> AnnData | SpatialData:
    """A copy of ``data`` of the same type, for ``copy=True``: whatever sthinge writes into it leaves ``data`` as it is.

    An AnnData is copied whole. A SpatialData gets copies of its tables and shapes and shares its images, labels and
    points with ``data`` (sthinge never writes them, and copying would load lazily read images into memory).
    """
    from anndata import AnnData

    if isinstance(data, AnnData):
        return data.copy()
    import copy as _copy

    from spatialdata import SpatialData, deepcopy

    extra = {"attrs": _copy.deepcopy(dict(data.attrs))} if getattr(data, "attrs", None) is not None else {}
    return SpatialData(
        images=dict(data.images),
        labels=dict(data.labels),
        points=dict(data.points),
        shapes={k: deepcopy(v) for k, v in data.shapes.items()},
        tables={k: v.copy() for k, v in data.tables.items()},
        **extra,
    )


def _table_for(
    data: AnnData | SpatialData, table_key: str | None, copy: bool
) -> tuple[AnnData, AnnData, AnnData | SpatialData | None]:
    """Return ``(source_table, target_table, copied_data)`` for the ``copy`` rule of the ``pp`` functions.

    Without ``copy``: ``(table, table, None)``, the function writes into ``data``. With ``copy``: the target is the
    same table of :func:`_copy_data`'s copy of ``data``, returned third (the function returns it).
    """
    copy = _check_bool("copy", copy)
    if table_key is not None and not isinstance(table_key, str):
        raise TypeError(f"`table_key` must be a string or None, got {type(table_key).__name__}.")
    table, key = _resolve_table(data, table_key)
    if not copy:
        return table, table, None
    out = _copy_data(data)
    return table, (out if key is None else out.tables[key]), out


def _section_labels(table: AnnData, section_key: str) -> np.ndarray:
    """Section name of every row (``obs[section_key]``); a table without the column is one section ``"all"``."""
    section_key = _check_key("section_key", section_key)
    if section_key in table.obs:
        values = table.obs[section_key]
        if values.isna().any():
            raise ValueError(f"`obs[{section_key!r}]` (the `section_key` column) holds missing values.")
        return values.astype(str).to_numpy()
    return np.full(table.n_obs, "all", dtype=object)


def _section_order(labels: np.ndarray) -> list[str]:
    return list(dict.fromkeys(labels.tolist()))


def _get_matrix(table: AnnData, layer: str | None):
    """Return ``X`` or ``layers[layer]``; ``KeyError`` naming the available layers."""
    if layer is None:
        if table.X is None:
            raise ValueError("The table has no `X`; pass `layer=` naming the layer with the counts.")
        return table.X
    if not isinstance(layer, str):
        raise TypeError(f"`layer` must be a string or None, got {type(layer).__name__}.")
    if layer not in table.layers:
        raise KeyError(f"`layer` {layer!r} not found; available layers: {list(table.layers.keys())}.")
    return table.layers[layer]


def _values(matrix) -> np.ndarray:
    """The stored values of a dense or sparse matrix (a view where possible), for validity checks."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        return np.asarray(matrix.data)
    if hasattr(matrix, "compute"):  # dask
        matrix = matrix.compute()
    return np.asarray(matrix).ravel()


def _check_counts(matrix, *, what: str, allow_non_integer: bool = False) -> None:
    """Refuse NaN / infinite / negative values and (unless allowed) non-integer values in a count matrix."""
    v = _values(matrix)
    if v.size == 0:
        return
    if np.issubdtype(v.dtype, np.floating):
        bad = ~np.isfinite(v)
        if bad.any():
            raise ValueError(f"{what} holds {int(bad.sum())} NaN or infinite value(s); remove or impute them first.")
    if (v < 0).any():
        raise ValueError(f"{what} holds {int((v < 0).sum())} negative value(s); raw counts must be >= 0.")
    if not allow_non_integer and np.issubdtype(v.dtype, np.floating):
        frac = v != np.round(v)
        if frac.any():
            raise ValueError(
                f"{what} holds {int(frac.sum())} non-integer value(s): it looks already normalised. Pass the raw "
                "counts (`layer=`), or `allow_non_integer=True` for non-integer counts (e.g. ambient-corrected)."
            )


def _log1p_cp10k(matrix, target_sum: float = 1e4):
    """ln(1 + counts / total * target_sum) with the total over all columns; float32, sparse stays sparse."""
    import scipy.sparse as sp

    if sp.issparse(matrix):
        m = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        totals = np.asarray(m.sum(axis=1)).ravel()
        scale = np.divide(target_sum, totals, out=np.zeros_like(totals, dtype=np.float64), where=totals > 0)
        m.data *= np.repeat(scale, np.diff(m.indptr)).astype(np.float32)
        np.log1p(m.data, out=m.data)
        return m
    m = np.asarray(matrix, dtype=np.float32)
    totals = m.sum(axis=1, dtype=np.float64)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    return np.log1p(m * scale[:, None].astype(np.float32))
