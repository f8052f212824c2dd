"""``pp.aggregate_bins`` and ``pp.aggregate_cells``: the counts of finer units (Visium HD bins, Xenium cells) summed
into the spots that sthinge fits and predicts on, written as a new shapes element and table."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _check_float, _check_int, _is_spatialdata
from sthinge.pp._common import _check_bool, _check_counts, _check_key, _get_matrix
from sthinge.pp._tiles import SDIO_READER_KEY

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

_BIN_NAME = re.compile(r"square_(\d+(?:\.\d+)?)um")  # spatialdata-io's Visium HD tables: "square_008um", ...


def _check_spatialdata(data) -> None:
    if not _is_spatialdata(data):
        raise TypeError(f"`data` must be a SpatialData object, got {type(data).__name__}.")


def _source_units(sdata, table_key: str, arg: str = "table_key"):
    """The table ``table_key``, the shapes element it annotates and the centres (x, y) of its rows' shapes."""
    from sthinge.pp._tiles import _check_finite, _shape_centres

    if table_key not in sdata.tables:
        raise KeyError(f"`{arg}` {table_key!r} not found; tables: {list(sdata.tables.keys())}.")
    table = sdata.tables[table_key]
    attrs = table.uns.get("spatialdata_attrs") or {}
    region, instance_key = attrs.get("region"), attrs.get("instance_key")
    regions = [region] if isinstance(region, str) else list(region if region is not None else [])
    if len(regions) != 1:
        raise ValueError(
            f"Table {table_key!r} (`{arg}`) annotates {len(regions)} elements {regions}; aggregation works on a "
            "table that annotates one shapes element. Subset the table first."
        )
    region = regions[0]
    if region not in sdata.shapes:
        kind = "labels" if region in sdata.labels else "missing"
        raise ValueError(
            f"Table {table_key!r} (`{arg}`) annotates {region!r}, which is not a shapes element ({kind}); the "
            "units must be shapes (circles, squares or polygons). For Xenium, read with spatialdata-io's "
            "`xenium(..., cells_as_circles=True)`."
        )
    if instance_key not in table.obs:
        raise KeyError(f"Table {table_key!r} has no `obs[{instance_key!r}]` (its instance key).")
    shapes = sdata.shapes[region]
    xy, _ = _shape_centres(shapes, table.obs[instance_key].to_numpy())
    _check_finite(table_key, xy, table.obs_names, f"the shapes element {region!r}")
    return table, region, shapes, xy


def _counts(table, layer, table_key: str):
    import scipy.sparse as sp

    matrix = _get_matrix(table, layer)
    _check_counts(matrix, what=f"The counts of table {table_key!r}", allow_non_integer=False)
    return sp.csr_matrix(matrix)


def _sum_into(counts, groups: np.ndarray, n_groups: int):
    """Row sums of ``counts`` per group (``groups[i]`` in 0..n_groups-1, or -1 for rows that go nowhere)."""
    import scipy.sparse as sp

    keep = np.flatnonzero(groups >= 0)
    indicator = sp.csr_matrix(
        (np.ones(len(keep), dtype=counts.dtype), (groups[keep], keep)), shape=(n_groups, counts.shape[0])
    )
    out = (indicator @ counts).tocsr()
    out.sort_indices()
    return out


def _output_names(sdata, *, section: str, key_added, table_key_added, default: str, overwrite) -> tuple[str, str]:
    from sthinge.pp._grid import _check_element_names

    key_added = _check_key("key_added", key_added, optional=True) or default
    table_key_added = _check_key("table_key_added", table_key_added, optional=True) or f"{key_added}_table"
    if table_key_added.lower() == key_added.lower():
        raise ValueError(f"`table_key_added` and `key_added` are both {key_added!r}; SpatialData needs distinct names.")
    _check_element_names(sdata, key_added=key_added, table_key_added=table_key_added, overwrite=overwrite)
    return key_added, table_key_added


def _write(sdata, *, shapes, counts, var, obs: dict, xy, section, key_added, table_key_added, meta) -> None:
    import anndata as ad
    import pandas as pd
    from spatialdata.models import TableModel

    n = counts.shape[0]
    obs_df = pd.DataFrame(
        {
            K.SECTION_KEY: pd.Categorical([section] * n),
            K.REGION_KEY: pd.Categorical([key_added] * n),
            K.INSTANCE_KEY: np.arange(n),
            **obs,
        },
        index=[f"{key_added}_{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=counts, obs=obs_df, var=var.copy())
    adata.obsm[K.SPATIAL_KEY] = np.asarray(xy, dtype=float)
    adata.uns[K.UNS_SECTIONS] = {section: {**meta, "shapes": key_added}}
    table = TableModel.parse(adata, region=key_added, region_key=K.REGION_KEY, instance_key=K.INSTANCE_KEY)
    if key_added in sdata.shapes or table_key_added in sdata.tables:  # allowed by `overwrite=True` (checked before)
        logg.info(f"replacing the existing shapes {key_added!r} / table {table_key_added!r}.")
    sdata.shapes[key_added] = shapes
    sdata.tables[table_key_added] = table


def _same_frame_image(sdata, shapes) -> str | None:
    """The image whose pixels are the shapes' units (same transformation in a shared coordinate system), if any."""
    from sthinge.pp._tiles import _affine, _coordinate_systems

    for name, element in sdata.images.items():
        for cs in _coordinate_systems(shapes):
            if cs in _coordinate_systems(element) and np.allclose(_affine(element, cs), _affine(shapes, cs)):
                return name
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Visium HD bins


def _native_bin_um(sdata, table_key: str, region: str, native_bin_um) -> float:
    if native_bin_um is not None:
        return _check_float("native_bin_um", native_bin_um, low=0.0, low_open=True)
    for name in (table_key, region):
        found = _BIN_NAME.search(name)
        if found:
            return float(found.group(1))
    raise ValueError(
        f"The bin size of table {table_key!r} is not in its name (spatialdata-io names Visium HD tables "
        "'square_002um', 'square_008um', ...); pass `native_bin_um=`."
    )


def _default_bins_table(sdata, bin_size_um: float) -> str:
    """The coarsest spatialdata-io Visium HD table whose bin size divides ``bin_size_um``."""
    sizes = {}
    for name in sdata.tables:
        found = _BIN_NAME.fullmatch(name)
        if found:
            sizes[name] = float(found.group(1))
    if not sizes:
        raise ValueError(
            "No Visium HD bin table ('square_002um', 'square_008um', ...) found; pass `table_key=` naming the table "
            f"of the native bins. Tables: {list(sdata.tables.keys())}."
        )
    fits = {name: s for name, s in sizes.items() if _is_multiple(bin_size_um, s)}
    if not fits:
        raise ValueError(
            f"`bin_size_um`={bin_size_um:g} is not a multiple of any native bin size "
            f"({', '.join(f'{s:g} µm' for s in sorted(sizes.values()))}); choose a multiple, e.g. "
            f"{_nearest_multiple(bin_size_um, min(sizes.values())):g}."
        )
    return max(fits, key=fits.get)


def _is_multiple(size: float, native: float) -> bool:
    k = size / native
    return k >= 1 - 1e-9 and abs(k - round(k)) < 1e-6


def _nearest_multiple(size: float, native: float) -> float:
    return max(1, round(size / native)) * native


def _default_section(table, region: str, table_key: str) -> str:
    """The table's one section (sthinge's bins), else the spatialdata-io dataset id in the shapes' name."""
    if K.SECTION_KEY in table.obs and table.obs[K.SECTION_KEY].nunique() == 1:
        return str(table.obs[K.SECTION_KEY].iloc[0])
    found = re.match(r"(.+?)_?square_\d", region)
    return found.group(1) if found and found.group(1) else table_key


def _fit_array_frame(cols: np.ndarray, rows: np.ndarray, xy: np.ndarray, table_key: str) -> np.ndarray:
    """The affine map (2 x 3) from a bin's array (column, row) to its centre, fitted on all bins and checked."""
    design = np.c_[cols, rows, np.ones(len(cols))].astype(float)
    if len(cols) < 3 or np.linalg.matrix_rank(design) < 3:
        raise ValueError(
            f"Table {table_key!r} has fewer than three bins off one line; the bin grid cannot be placed. Aggregate "
            "a larger region."
        )
    coef, *_ = np.linalg.lstsq(design, xy, rcond=None)
    frame = coef.T  # (2, 3): xy = frame @ (col, row, 1)
    pitch = float(np.mean(np.linalg.norm(frame[:, :2], axis=0)))
    residual = float(np.abs(design @ coef - xy).max())
    if not pitch > 0 or residual > 0.25 * pitch:
        raise ValueError(
            f"The bins of table {table_key!r} do not lie on the grid of their `array_row` / `array_col` (largest "
            f"deviation {residual:.3g} units, bin pitch {pitch:.3g}); these columns must be the bins' grid indices."
        )
    return frame


def aggregate_bins(
    data: SpatialData,
    bin_size_um: float,
    *,
    table_key: str | None = None,
    native_bin_um: float | None = None,
    layer: str | None = None,
    section: str | None = None,
    key_added: str | None = None,
    table_key_added: str | None = None,
    overwrite: bool = False,
) -> None:
    """Sum Visium HD bins into square bins of ``bin_size_um``, the spots to fit and predict on.

    Visium HD measures expression in 2 µm bins, and Space Ranger also writes 8 and 16 µm bins; spatialdata-io
    reads each size as a table (``"square_002um"``, ``"square_008um"``, ...) annotating square shapes. Models
    of histology work better on larger spots with more counts; this function sums the native bins into squares
    of the size you pick, which must be a multiple of the native size. Each output square covers a block of
    ``k x k`` native bins (``k = bin_size_um / native``) of the bins' own grid, counted from the grid's origin
    (array index 0). The grid indices
    come from the table's ``obs["array_row"]`` and ``obs["array_col"]`` (spatialdata-io keeps them); the squares
    follow the grid's orientation in the image.

    The sums are a sparse matrix product over the table, so this runs in seconds on millions of 2 µm bins and
    all genes. (:func:`spatialdata.aggregate` gives the same sums from the shapes' geometry, one dense column
    per gene; the tests check that both agree.)

    Parameters
    ----------
    data
        SpatialData read by :func:`spatialdata_io.visium_hd` (or of the same layout).
    bin_size_um
        Side of the output squares in µm; a multiple of the native bin size, e.g. 16, 32, 48 or 100 for 2 µm bins.
    table_key
        Table of the native bins. Default: the coarsest ``"square_XXXum"`` table whose bin size divides
        ``bin_size_um`` (the sums are the same from any of them; the coarsest has the fewest rows).
    native_bin_um
        Side of the native bins in µm; default read from the table's name (``"square_008um"``: 8 µm).
    layer
        Layer of the table holding the counts (default ``X``).
    section
        Section name written to ``obs["section"]``; default the table's own section (when it has one), else the
        spatialdata-io dataset id (the shapes' name before ``"_square_"``), else ``table_key``.
    key_added
        Name of the shapes element written; default ``f"{section}_bins_{bin_size_um}um"``.
    table_key_added
        Name of the table written; default ``f"{key_added}_table"``. Pass it as ``table_key`` to
        :func:`sthinge.pp.normalize`, :func:`sthinge.pp.select_genes`, :func:`sthinge.pp.embed_histology`,
        :func:`sthinge.tl.fit` and :func:`sthinge.tl.predict`.
    overwrite
        Replace an existing shapes element ``key_added`` / table ``table_key_added``; without it they are refused
        before any work. Shapes that another table annotates are never replaced.

    Returns
    -------
    ``None``. Written into ``data``:

    - ``shapes[key_added]``: the squares (polygons) in the native bins' coordinate systems;
    - ``tables[table_key_added]``: the summed counts (genes as in ``table_key``), ``obs["section"]``,
      ``obs["region"]``, ``obs["spot_id"]``, ``obs["array_x"]`` / ``obs["array_y"]`` (indices of the output
      squares), ``obs["n_bins"]`` (native bins summed), ``obsm["spatial"]`` (centres in the bins' units) and
      ``uns["sthinge_sections"][section]`` with the pixel size (µm per unit of the bins' coordinates, from the
      native bin pitch), the spot size and, where one shares the bins' frame, the full-resolution image.

    Examples
    --------
    >>> import spatialdata_io
    >>> import sthinge as st
    >>> sdata = spatialdata_io.visium_hd("outs/", fullres_image_file="image.tif")  # doctest: +SKIP
    >>> st.pp.aggregate_bins(sdata, 32)  # doctest: +SKIP
    >>> st.pp.normalize(sdata, table_key="_bins_32um_table")  # doctest: +SKIP
    """
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import Polygon
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    _check_spatialdata(data)
    bin_size_um = _check_float("bin_size_um", bin_size_um, low=0.0, low_open=True)
    if table_key is None:
        table_key = _default_bins_table(data, bin_size_um)
    table_key = _check_key("table_key", table_key)
    table, region, shapes, xy = _source_units(data, table_key)
    native = _native_bin_um(data, table_key, region, native_bin_um)
    if not _is_multiple(bin_size_um, native):
        raise ValueError(
            f"`bin_size_um`={bin_size_um:g} is not a multiple of the native bin size {native:g} µm of table "
            f"{table_key!r}; choose a multiple, e.g. {_nearest_multiple(bin_size_um, native):g}."
        )
    k = int(round(bin_size_um / native))
    for col in ("array_row", "array_col"):
        if col not in table.obs:
            raise KeyError(
                f"Table {table_key!r} has no `obs[{col!r}]`: the bins' grid indices, which spatialdata-io's "
                "`visium_hd` reads from Space Ranger's tissue positions."
            )
    rows = table.obs["array_row"].to_numpy()
    cols = table.obs["array_col"].to_numpy()
    if not (np.issubdtype(rows.dtype, np.integer) and np.issubdtype(cols.dtype, np.integer)):
        raise TypeError(f"`obs['array_row']` / `obs['array_col']` of table {table_key!r} must hold integers.")
    counts = _counts(table, layer, table_key)
    if section is None:
        section = _default_section(table, region, table_key)
    section = _check_key("section", section)
    key_added, table_key_added = _output_names(
        data,
        section=section,
        key_added=key_added,
        table_key_added=table_key_added,
        default=f"{section}_bins_{bin_size_um:g}um",
        overwrite=overwrite,
    )
    frame = _fit_array_frame(cols, rows, xy, table_key)

    # ---- group the native bins into blocks of k x k
    block = np.c_[rows // k, cols // k]
    uniq, groups = np.unique(block, axis=0, return_inverse=True)
    groups = groups.ravel()
    summed = _sum_into(counts, groups, len(uniq))
    n_bins = np.bincount(groups, minlength=len(uniq))
    br, bc = uniq[:, 0], uniq[:, 1]
    # block (br, bc) spans array columns bc*k - 0.5 .. bc*k + k - 0.5 (and the same for rows)
    lo_c, lo_r = bc * k - 0.5, br * k - 0.5
    corners = [(lo_c, lo_r), (lo_c + k, lo_r), (lo_c + k, lo_r + k), (lo_c, lo_r + k)]
    pts = [np.c_[c, r, np.ones(len(uniq))] @ frame.T for c, r in corners]  # 4 x (n, 2)
    polygons = [Polygon([tuple(p[i]) for p in pts]) for i in range(len(uniq))]
    centres = np.c_[bc * k + (k - 1) / 2, br * k + (k - 1) / 2, np.ones(len(uniq))] @ frame.T
    new_shapes = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=polygons, index=pd.Index(np.arange(len(uniq)), name=K.INSTANCE_KEY)),
        transformations=dict(get_transformation(shapes, get_all=True)),
    )
    pitch = float(np.mean(np.linalg.norm(frame[:, :2], axis=0)))  # units per native bin
    meta = {"mpp": native / pitch, "spot_diameter_um": bin_size_um}
    image = _same_frame_image(data, shapes)
    if image is not None:
        meta["image"] = image
    _write(
        data,
        shapes=new_shapes,
        counts=summed,
        var=table.var,
        obs={K.ARRAY_X: bc.astype(int), K.ARRAY_Y: br.astype(int), "n_bins": n_bins.astype(int)},
        xy=centres,
        section=section,
        key_added=key_added,
        table_key_added=table_key_added,
        meta=meta,
    )
    logg.info(
        f"aggregate_bins: {table.n_obs} bins of {native:g} µm ({table_key!r}) summed into {len(uniq)} squares of "
        f"{bin_size_um:g} µm: shapes {key_added!r}, table {table_key_added!r}."
    )


# ---------------------------------------------------------------------------------------------------------------------
# cells (Xenium) into pseudo-spots


def _cells_to_image(sdata, shapes, region: str, image_key: str) -> np.ndarray:
    """The affine map (3 x 3) from the cells' shape coordinates to the image's level-0 pixels."""
    from sthinge.pp._tiles import _affine, _coordinate_systems

    image = sdata.images[image_key]
    shared = [c for c in _coordinate_systems(shapes) if c in _coordinate_systems(image)]
    if not shared:
        raise ValueError(
            f"The cells' shapes {region!r} (coordinate systems {_coordinate_systems(shapes)}) and the image "
            f"`image_key` {image_key!r} (coordinate systems {_coordinate_systems(image)}) share no coordinate "
            "system, so the cells cannot be placed on the image. Add the alignment as a transformation of the "
            "image (spatialdata-io's `xenium_aligned_image` does this)."
        )
    cs = "global" if "global" in shared else shared[0]
    return np.linalg.inv(_affine(image, cs)) @ _affine(shapes, cs)


def aggregate_cells(
    data: SpatialData,
    image_key: str,
    *,
    table_key: str = K.TABLE_KEY,
    spacing_um: float = 100.0,
    spot_diameter_um: float | None = None,
    min_cells: int = 1,
    mpp: float | None = None,
    layer: str | None = None,
    section: str | None = None,
    key_added: str | None = None,
    table_key_added: str | None = None,
    overwrite: bool = False,
) -> None:
    """Sum the counts of single cells (e.g. Xenium) into pseudo-spots laid over an aligned H&E image.

    Imaging-based platforms measure cells, not spots, and their H&E is a separate image aligned to the cells'
    coordinates. This function lays a square grid of circular pseudo-spots over the H&E image (as
    :func:`sthinge.pp.make_grid` does, over the whole image), maps every cell's centre into the image's pixels
    through spatialdata's transformations (the alignment; never assumed to be the identity), and sums the
    counts of the cells whose centre lies inside each spot. Spots with fewer than ``min_cells`` cells are
    dropped; cells outside every spot (between spots, or off the image) are left out. The result is a table of
    spots with counts, which fits and predicts like Visium.

    Parameters
    ----------
    data
        SpatialData holding the cells' table, their shapes and the H&E image, e.g. read by
        :func:`spatialdata_io.xenium` with ``cells_as_circles=True`` (the table must annotate shapes).
    image_key
        The H&E image the pseudo-spots are laid on; it must share a coordinate system with the cells' shapes.
    table_key
        Table of the cells (its ``X`` or ``layer`` holds raw counts).
    spacing_um
        Distance between neighbouring pseudo-spots (µm).
    spot_diameter_um
        Diameter of each pseudo-spot (µm); default ``spacing_um`` (touching circles).
    min_cells
        Keep the spots holding at least this many cells.
    mpp
        µm per pixel of the image's full-resolution level. Default: the one sthinge recorded for the image
        (:func:`sthinge.io.read_slide`, a table's ``uns["sthinge_sections"]``); else, for data read by
        spatialdata-io's ``xenium`` reader (whose cell coordinates are in µm), the scale of the alignment.
    layer
        Layer of the cells' table holding the counts (default ``X``).
    section
        Section name written to ``obs["section"]``; default ``image_key`` without an ``"_image"`` suffix.
    key_added
        Name of the shapes element written; default ``f"{section}_cells_{spacing_um}um"``.
    table_key_added
        Name of the table written; default ``f"{key_added}_table"``. Pass it as ``table_key`` to the ``pp`` and
        ``tl`` functions.
    overwrite
        Replace an existing shapes element ``key_added`` / table ``table_key_added``; without it they are refused
        before any work.

    Returns
    -------
    ``None``. Written into ``data``: ``shapes[key_added]`` (circles in the image's coordinate systems) and
    ``tables[table_key_added]`` with the summed counts, ``obs["n_cells"]``, the grid indices
    ``obs["array_x"]`` / ``obs["array_y"]``, ``obsm["spatial"]`` (image pixels) and
    ``uns["sthinge_sections"][section]`` (``mpp``, ``spot_diameter_um``, ``image``).

    Examples
    --------
    >>> import spatialdata_io
    >>> import sthinge as st
    >>> sdata = spatialdata_io.xenium("outs/", cells_as_circles=True)  # doctest: +SKIP
    >>> st.pp.aggregate_cells(sdata, "he_image", spacing_um=100)  # doctest: +SKIP
    """
    import pandas as pd
    from scipy.spatial import cKDTree
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    from sthinge.pp._grid import _image_mpp, make_grid
    from sthinge.pp._tiles import _scale_of

    _check_spatialdata(data)
    image_key = _check_key("image_key", image_key)
    if image_key not in data.images:
        raise KeyError(f"`image_key` {image_key!r} not found; images: {list(data.images.keys())}.")
    table_key = _check_key("table_key", table_key)
    spacing_um = _check_float("spacing_um", spacing_um, low=0.0, low_open=True)
    if spot_diameter_um is not None:
        spot_diameter_um = _check_float("spot_diameter_um", spot_diameter_um, low=0.0, low_open=True)
    min_cells = _check_int("min_cells", min_cells, low=1)
    _check_bool("overwrite", overwrite)
    table, region, shapes, xy = _source_units(data, table_key)
    m = _cells_to_image(data, shapes, region, image_key)
    if mpp is None:
        mpp = _image_mpp(data, image_key)
    if mpp is None and (getattr(data, "attrs", None) or {}).get(SDIO_READER_KEY) == "xenium":
        mpp = 1.0 / _scale_of(m)  # spatialdata-io's Xenium cells are in µm: image pixels per µm is the map's scale
        logg.info(f"aggregate_cells: {image_key!r} at {mpp:.4g} µm per pixel, from the alignment to the cells (µm).")
    if mpp is None:
        raise ValueError(
            f"Image {image_key!r} has no known physical scale: pass `mpp=` (µm per pixel of its full resolution)."
        )
    mpp = _check_float("mpp", mpp, low=0.0, low_open=True)
    counts = _counts(table, layer, table_key)
    if section is None:
        section = image_key[: -len(K.IMAGE_SUFFIX)] if image_key.endswith(K.IMAGE_SUFFIX) else image_key
    section = _check_key("section", section)
    key_added, table_key_added = _output_names(
        data,
        section=section,
        key_added=key_added,
        table_key_added=table_key_added,
        default=f"{section}_cells_{spacing_um:g}um",
        overwrite=overwrite,
    )

    grid = make_grid(
        data,
        image_key,
        spacing_um=spacing_um,
        spot_diameter_um=spot_diameter_um,
        tissue_only=False,
        mpp=mpp,
        section=section,
        key_added=key_added,
        table_key_added=table_key_added,
        inplace=False,
    )
    grid_shapes, grid_table = grid.shapes[key_added], grid.tables[table_key_added]
    centres = np.asarray(grid_table.obsm[K.SPATIAL_KEY], dtype=float)
    radius = float(grid_shapes["radius"].iloc[0])
    cells_px = (np.c_[xy, np.ones(len(xy))] @ m.T)[:, :2]
    dist, nearest = cKDTree(centres).query(cells_px, distance_upper_bound=radius)
    groups = np.where(np.isfinite(dist), nearest, -1).astype(np.int64)
    n_cells = np.bincount(groups[groups >= 0], minlength=len(centres))
    keep = np.flatnonzero(n_cells >= min_cells)
    if len(keep) == 0:
        raise ValueError(
            f"No pseudo-spot of {image_key!r} holds {min_cells} cell(s) or more: the cells do not fall on the "
            "image. Check the alignment (the image's transformations) and `mpp`."
        )
    remap = np.full(len(centres), -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    spot_of_cell = np.where(groups >= 0, remap[np.maximum(groups, 0)], -1)
    summed = _sum_into(counts, spot_of_cell, len(keep))
    new_shapes = ShapesModel.parse(
        centres[keep],
        geometry=0,
        radius=np.full(len(keep), radius),
        index=pd.Index(np.arange(len(keep)), name=K.INSTANCE_KEY),
        transformations=dict(get_transformation(grid_shapes, get_all=True)),
    )
    meta = dict(grid_table.uns[K.UNS_SECTIONS][section])
    meta.pop("shapes", None)
    _write(
        data,
        shapes=new_shapes,
        counts=summed,
        var=table.var,
        obs={
            K.ARRAY_X: grid_table.obs[K.ARRAY_X].to_numpy()[keep],
            K.ARRAY_Y: grid_table.obs[K.ARRAY_Y].to_numpy()[keep],
            "n_cells": n_cells[keep].astype(int),
        },
        xy=centres[keep],
        section=section,
        key_added=key_added,
        table_key_added=table_key_added,
        meta=meta,
    )
    placed = int(n_cells[keep].sum())
    logg.info(
        f"aggregate_cells: {placed} of {table.n_obs} cells in {len(keep)} pseudo-spots of {image_key!r} "
        f"(every {spacing_um:g} µm): shapes {key_added!r}, table {table_key_added!r}."
    )
