"""``pp.make_grid``: pseudo-spots on a regular grid over the tissue of an H&E image without expression."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _check_float, _check_overwrite, _is_spatialdata, _removed_keywords
from sthinge.pp._common import _check_bool, _check_key

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

_TISSUE_MAX_SIDE = 2048  # tissue detection runs on the finest pyramid level with both sides <= this


def _image_mpp(sdata, image_key: str) -> float | None:
    """µm per pixel of ``image_key`` recorded by a table's ``uns["sthinge_sections"]``, if any; else the one that
    :func:`sthinge.io.read_slide` recorded in ``sdata.attrs["sthinge_slides"][image_key]["mpp"]``.

    ``SpatialData.attrs`` is written to the root of the .zarr and read back by ``spatialdata.read_zarr``, so a
    slide's pixel size survives a round trip without any table.
    """
    import math
    import numbers

    from sthinge.io._slide import SLIDES_KEY

    for table in sdata.tables.values():
        meta = table.uns.get(K.UNS_SECTIONS, {}) or {}
        for info in meta.values():
            if isinstance(info, dict) and info.get("image") == image_key and info.get("mpp") is not None:
                return float(info["mpp"])
    slides = (getattr(sdata, "attrs", None) or {}).get(SLIDES_KEY)
    info = slides.get(image_key) if isinstance(slides, dict) else None
    value = info.get("mpp") if isinstance(info, dict) else None
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
        return float(value)
    return None


def _check_element_names(sdata, *, key_added: str, table_key_added: str, overwrite) -> None:
    """Where ``make_grid`` writes: no clash with an element of another type; an existing grid only with overwrite."""
    elements = {
        "image": sdata.images,
        "labels": sdata.labels,
        "points": sdata.points,
        "shapes": sdata.shapes,
        "table": sdata.tables,
    }
    for arg, name, own in (("key_added", key_added, "shapes"), ("table_key_added", table_key_added, "table")):
        for kind, items in elements.items():
            for existing in items:
                if existing.lower() == name.lower() and not (kind == own and existing == name):
                    raise ValueError(
                        f"`{arg}` {name!r} is the name of the existing {kind} element {existing!r}: SpatialData "
                        "element names are unique across images, labels, points, shapes and tables (and their "
                        "case). Choose another name."
                    )
    for tname, table in sdata.tables.items():
        region = (table.uns.get("spatialdata_attrs") or {}).get("region")
        regions = [region] if isinstance(region, str) else list(region if region is not None else [])
        if tname != table_key_added and key_added in regions:
            raise ValueError(
                f"`key_added` {key_added!r} names shapes that table {tname!r} annotates; replacing them would detach "
                "that table from its spots. Choose another name."
            )
    _check_overwrite(
        f"`key_added` {key_added!r}: the shapes element {key_added!r}", key_added in sdata.shapes, overwrite
    )
    _check_overwrite(
        f"`table_key_added` {table_key_added!r}: the table {table_key_added!r}",
        table_key_added in sdata.tables,
        overwrite,
    )


def tissue_mask(levels, *, min_area_px0: float) -> tuple[np.ndarray, tuple[float, float]]:
    """Boolean tissue mask on a low-resolution level and its (fy, fx) factors relative to level 0.

    Otsu threshold on saturation (background glass is bright and grey), then small objects removed and holes filled.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    from sthinge.pp._tiles import to_uint8

    k = 0
    for i, a in enumerate(levels.arrays):
        k = i
        if max(a.shape[1:]) <= _TISSUE_MAX_SIDE:
            break
    fy, fx = levels.factors[k]
    arr = levels.arrays[k]
    stride = -(-max(arr.shape[1:]) // _TISSUE_MAX_SIDE)  # > 1 when even the coarsest level is large
    if stride > 1:  # read every stride-th pixel, chunk by chunk: the level is never held whole in memory
        arr = arr[:, ::stride, ::stride]
        fy, fx = fy * stride, fx * stride
    rgb = np.asarray(arr.compute() if hasattr(arr, "compute") else arr)
    # the values read by the one rule of sthinge.pp._tiles (refuses NaN / out-of-range values, never clips)
    rgb = to_uint8(levels, rgb, f" on pyramid level {k}").astype(np.float32) / 255.0  # (3, y, x) in [0, 1]
    mx, mn = rgb.max(0), rgb.min(0)
    sat = (mx - mn) / np.maximum(mx, 1e-3)
    sat = ndimage.uniform_filter(sat, size=3)
    if np.ptp(sat) < 1e-6:
        return np.zeros(sat.shape, dtype=bool), (fy, fx)
    mask = sat > threshold_otsu(sat)
    mask = ndimage.binary_closing(mask, iterations=2)
    labels, n = ndimage.label(mask)
    if n:
        sizes = np.bincount(labels.ravel())
        small = sizes < max(1.0, min_area_px0 / (fy * fx))
        small[0] = True
        mask = ~small[labels]
    mask = ndimage.binary_fill_holes(mask)
    return mask, (fy, fx)


@_removed_keywords(
    table_key="it named the table written, which is now `table_key_added=`",
    copy="pass `inplace=False` to get the grid as a new SpatialData without writing it into `data`",
)
def make_grid(
    data: SpatialData,
    image_key: str,
    *,
    spacing_um: float = 100.0,
    spot_diameter_um: float | None = None,
    tissue_only: bool = True,
    mpp: float | None = None,
    section: str | None = None,
    key_added: str | None = None,
    table_key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
) -> SpatialData | None:
    """Lay pseudo-spots on a regular grid over the tissue of an H&E image that has no expression.

    The result is a shapes element of circles and a table with zero genes in sthinge's layout, so that
    :func:`sthinge.pp.embed_histology` (and prediction) run on H&E-only slides. Tissue is found on a low-
    resolution pyramid level by an Otsu threshold on saturation, closing, removal of objects smaller than
    four grid cells and hole filling. Pixel values are read by the same rule as in ``embed_histology`` (NaN,
    negative or unreadable values are refused; see the "Your data" page, :doc:`/data`).

    Parameters
    ----------
    data
        SpatialData holding the image.
    image_key
        Name of the image element.
    spacing_um
        Distance between neighbouring pseudo-spots (µm), on a square grid.
    spot_diameter_um
        Diameter of each pseudo-spot (µm); default ``spacing_um``.
    tissue_only
        Keep only grid points on tissue (else the whole image).
    mpp
        Micrometres per pixel of the image's full-resolution level. Default: the ``mpp`` that a table's
        ``uns["sthinge_sections"]`` records for this image, else the one :func:`sthinge.io.read_slide` read from
        the slide's metadata; an image without a known scale is refused.
    section
        Section name written to ``obs["section"]``; default ``image_key`` without its ``"_image"`` suffix.
    key_added
        Name of the shapes element written; default ``f"{section}_grid"``. It must not name an element of
        another type (image, labels, points, table): SpatialData element names are unique across types.
    table_key_added
        Name of the table written; default ``f"{key_added}_table"``. It must not name an element of another type.
        (Elsewhere ``table_key`` names the table a function reads: pass this name as the ``table_key`` of
        :func:`sthinge.pp.embed_histology` and :func:`sthinge.tl.predict`.)
    overwrite
        Replace an existing shapes element ``key_added`` / table ``table_key_added`` (e.g. an earlier grid);
        without it they are refused (before any work). Shapes that another table annotates are never replaced. Not
        needed with ``inplace=False``.
    inplace
        Write the grid into ``data`` and return ``None`` (default); with ``False``, write nothing into ``data``
        and return the grid as a new SpatialData of its own: the image (shared with ``data``, not copied), the
        shapes and the table.

    Returns
    -------
    ``None``: the grid is written into ``data``. With ``inplace=False``: a new SpatialData holding the image, the
    grid and its table, and nothing is written. The grid is

    - ``shapes[key_added]``: circles (radius in image pixels) in the image's coordinate systems;
    - ``tables[table_key_added]``: ``n_spots x 0`` table with ``obs["section"]``, ``obs["region"]``,
      ``obs["spot_id"]``, ``obs["array_x"]``/``obs["array_y"]`` (grid indices), ``obsm["spatial"]`` (image
      pixels, x then y) and ``uns["sthinge_sections"][section] = {"mpp", "spot_diameter_um", "image",
      "shapes"}``.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10)
    >>> st.pp.make_grid(sdata, "S1_image", spacing_um=150)  # shapes "S1_grid", table "S1_grid_table"
    >>> st.pp.embed_histology(sdata, table_key="S1_grid_table")
    """
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    from sthinge.pp._tiles import image_levels_from_element

    if not _is_spatialdata(data):
        raise TypeError(f"`data` must be a SpatialData object holding the image, got {type(data).__name__}.")
    image_key = _check_key("image_key", image_key)
    if image_key not in data.images:
        raise KeyError(f"`image_key` {image_key!r} not found; images: {list(data.images.keys())}.")
    spacing_um = _check_float("spacing_um", spacing_um, low=0.0, low_open=True)
    diameter_arg = "`spot_diameter_um`" + ("" if spot_diameter_um is not None else " (by default `spacing_um`)")
    spot_diameter_um = (
        spacing_um
        if spot_diameter_um is None
        else _check_float("spot_diameter_um", spot_diameter_um, low=0.0, low_open=True)
    )
    tissue_only = _check_bool("tissue_only", tissue_only)
    inplace = _check_bool("inplace", inplace)
    if mpp is None:
        mpp = _image_mpp(data, image_key)
        if mpp is None:
            raise ValueError(f"Image {image_key!r} has no known physical scale: pass `mpp=` (µm per pixel).")
    mpp = _check_float("mpp", mpp, low=0.0, low_open=True)
    if section is None:
        section = image_key[: -len(K.IMAGE_SUFFIX)] if image_key.endswith(K.IMAGE_SUFFIX) else image_key
    section = _check_key("section", section)
    key_added = _check_key("key_added", key_added, optional=True) or f"{section}{K.GRID_SUFFIX}"
    table_key_added = _check_key("table_key_added", table_key_added, optional=True) or f"{key_added}_table"
    if table_key_added.lower() == key_added.lower():
        raise ValueError(f"`table_key_added` and `key_added` are both {key_added!r}; SpatialData needs distinct names.")
    if not inplace:  # the new object holds the image, the shapes and the table
        _check_bool("overwrite", overwrite)
        for arg, name in (("key_added", key_added), ("table_key_added", table_key_added)):
            if name.lower() == image_key.lower():
                raise ValueError(f"`{arg}` {name!r} is the name of the image; SpatialData needs distinct names.")
    else:
        _check_element_names(data, key_added=key_added, table_key_added=table_key_added, overwrite=overwrite)

    levels = image_levels_from_element(image_key, data.images[image_key])
    h, w = levels.shape
    step = spacing_um / mpp
    if step < 1:
        raise ValueError(f"`spacing_um`={spacing_um} is below one pixel at `mpp`={mpp}.")
    size_um = f"{w * mpp:.6g} x {h * mpp:.6g} µm (width x height at `mpp`={mpp:g})"
    if step / 2 >= min(w, h):  # the first grid point lies half a spacing from the edge
        raise ValueError(
            f"`spacing_um`={spacing_um:g} is larger than the image {image_key!r}, {size_um}: no grid point fits. "
            f"Use `spacing_um` below {2 * min(w, h) * mpp:.6g}."
        )
    if spot_diameter_um / mpp > max(w, h):
        raise ValueError(f"{diameter_arg} {spot_diameter_um:g} µm is larger than the image {image_key!r}, {size_um}.")
    gx, gy = np.arange(step / 2, w, step), np.arange(step / 2, h, step)
    ix, iy = np.meshgrid(np.arange(len(gx)), np.arange(len(gy)))
    ix, iy = ix.ravel(), iy.ravel()
    xy = np.stack([gx[ix], gy[iy]], axis=1)
    if tissue_only:
        mask, (fy, fx) = tissue_mask(levels, min_area_px0=4 * step * step)
        my = np.clip((xy[:, 1] / fy).astype(int), 0, mask.shape[0] - 1)
        mx = np.clip((xy[:, 0] / fx).astype(int), 0, mask.shape[1] - 1)
        keep = mask[my, mx]
        xy, ix, iy = xy[keep], ix[keep], iy[keep]
    if len(xy) == 0:
        raw, (fy, fx) = tissue_mask(levels, min_area_px0=0.0)
        if raw.any():  # there is tissue, but the grid is too coarse for it
            area = float(raw.sum()) * fy * fx * mpp * mpp / 1e6
            raise ValueError(
                f"`spacing_um`={spacing_um:g} is too large for the tissue of {image_key!r} (about {area:.3g} mm² in "
                f"all; image {size_um}): pieces of tissue smaller than four grid cells ({4e-6 * spacing_um**2:.3g} "
                "mm²) are ignored and no grid point falls on the rest. Use a smaller `spacing_um`, or "
                "`tissue_only=False` to cover the whole image."
            )
        raise ValueError(f"No tissue found in {image_key!r}; pass `tissue_only=False` to cover the whole image.")

    n = len(xy)
    transformations = get_transformation(data.images[image_key], get_all=True)
    shapes = ShapesModel.parse(
        xy.astype(float),
        geometry=0,
        radius=np.full(n, spot_diameter_um / 2 / mpp),
        index=pd.Index(np.arange(n), name=K.INSTANCE_KEY),
        transformations=dict(transformations),
    )
    obs = pd.DataFrame(
        {
            K.SECTION_KEY: pd.Categorical([section] * n),
            K.REGION_KEY: pd.Categorical([key_added] * n),
            K.INSTANCE_KEY: np.arange(n),
            K.ARRAY_X: ix.astype(int),
            K.ARRAY_Y: iy.astype(int),
        },
        index=[f"{section}_grid_{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=sp.csr_matrix((n, 0), dtype=np.float32), obs=obs)
    adata.obsm[K.SPATIAL_KEY] = xy.astype(float)
    adata.uns[K.UNS_SECTIONS] = {
        section: {
            "mpp": float(mpp),
            "spot_diameter_um": float(spot_diameter_um),
            "image": image_key,
            "shapes": key_added,
        }
    }
    table = TableModel.parse(adata, region=key_added, region_key=K.REGION_KEY, instance_key=K.INSTANCE_KEY)
    logg.info(f"make_grid: {n} pseudo-spots every {spacing_um:g} µm on {image_key!r}.")
    if not inplace:
        return SpatialData(
            images={image_key: data.images[image_key]}, shapes={key_added: shapes}, tables={table_key_added: table}
        )
    if key_added in data.shapes or table_key_added in data.tables:  # allowed by `overwrite=True` (checked above)
        logg.info(f"make_grid: replacing the existing shapes {key_added!r} / table {table_key_added!r}.")
    data.shapes[key_added] = shapes
    data.tables[table_key_added] = table
    return None
