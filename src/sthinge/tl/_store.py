"""A prediction table written to zarr as it is computed (``tl.predict(store=...)``), read back lazily.

The layout is anndata's own on-disk format: anndata writes the table's skeleton (``obs``, ``var``, ``obsm``), the
large arrays (``X``, ``layers``, the samples) are zarr arrays that the sampler fills chunk by chunk, and ``uns``
is written last. ``anndata.read_zarr`` reads the folder as any other table.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from anndata import AnnData

_ARRAY = {"encoding-type": "array", "encoding-version": "0.2.0"}  # anndata's encoding of a dense array
_DICT = {"encoding-type": "dict", "encoding-version": "0.1.0"}  # and of a mapping (layers, obsm)


def create_table_store(
    path: Path, *, obs: pd.DataFrame, var: pd.DataFrame, obsm: dict, arrays: dict[str, tuple[int, ...]], rows: int
) -> dict:
    """Write the skeleton of a table at ``path`` and create its large float32 arrays, chunked by ``rows`` rows.

    ``arrays`` maps ``"X"``, ``"layers/<name>"`` or ``"obsm/<name>"`` to a shape. Returns the zarr arrays by name,
    to be filled with ``array[lo:hi] = values``.
    """
    import anndata as ad
    import zarr

    skeleton = ad.AnnData(obs=obs, var=var, obsm=obsm)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zarr v2.*", category=UserWarning)
        skeleton.write_zarr(path)
    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)  # anndata consolidates; we add to it
    for group in ("layers", "obsm"):
        if group not in root:
            root.create_group(group).attrs.update(_DICT)
    out = {}
    for name, shape in arrays.items():
        arr = root.create_array(
            name, shape=shape, chunks=(min(rows, max(shape[0], 1)), *shape[1:]), dtype="float32", fill_value=np.nan
        )
        arr.attrs.update(_ARRAY)
        out[name] = arr
    return out


def finish_table_store(path: Path, uns: dict) -> None:
    """Write ``uns`` (known only once the arrays are filled) and the consolidated metadata of the whole store."""
    import anndata as ad
    import zarr

    root = zarr.open_group(str(path), mode="r+", use_consolidated=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*zarr v2.*", category=UserWarning)
        ad.io.write_elem(root, "uns", uns)
    zarr.consolidate_metadata(str(path))


def read_table_store(path: Path) -> AnnData:
    """The table at ``path`` with ``X``, ``layers`` and 3-d ``obsm`` arrays as dask arrays reading from it."""
    import anndata as ad
    import zarr
    from anndata.experimental import read_elem_lazy

    root = zarr.open_group(str(path), mode="r")
    layers = {name: read_elem_lazy(root["layers"][name]) for name in root["layers"]}
    obsm = {}
    for name in root["obsm"]:
        elem = root["obsm"][name]
        obsm[name] = read_elem_lazy(elem) if len(elem.shape) == 3 else ad.io.read_elem(elem)
    return ad.AnnData(
        X=read_elem_lazy(root["X"]),
        obs=ad.io.read_elem(root["obs"]),
        var=ad.io.read_elem(root["var"]),
        layers=layers,
        obsm=obsm,
        uns=ad.io.read_elem(root["uns"]) if "uns" in root else {},
    )
