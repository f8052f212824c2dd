"""Where the spots are in an image, at what physical scale, and how to cut tiles around them lazily.

Coordinates follow spatialdata's convention: pixel ``(i, j)`` of a raster covers ``[j, j + 1) x [i, i + 1)``,
so a pyramid level downsampled by ``f`` maps a level-0 coordinate ``c`` to ``c / f``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg

VISIUM_SPOT_DIAMETER_UM = 55.0
SDIO_READER_KEY = "spatialdata_io_reader"  # SpatialData.attrs entry in which spatialdata-io names its reader
_STATS_MAX_SIDE = 4096  # the value range of a single-level image larger than this is read on a strided subsample


@dataclass(frozen=True)
class ImageRange:
    """How an image's values are read: grey level = ``round(value * scale)``, which must lie in 0..255.

    Decided once per image by :func:`pixel_range` (the one rule; ``docs/data.md``), before anything is read.
    """

    scale: float  # 1 for 0..255 values, 255 for floats in [0, 1], 255 / 65535 for the full 16-bit range
    label: str  # what was assumed, e.g. "0-255 (float)"; recorded in uns[key_added]["value_range"]
    message: str | None = None  # logged at INFO when the reading is not a canonical form (uint8, float [0, 1])


@dataclass
class ImageLevels:
    """A (possibly multiscale) RGB image as lazy ``(c, y, x)`` arrays with their downsampling factors."""

    name: str
    arrays: list  # dask arrays (c, y, x), level 0 first
    factors: list[tuple[float, float]]  # (fy, fx) of each level relative to level 0
    value_range: ImageRange = ImageRange(1.0, "0-255 (uint8)")  # how values map to grey levels 0..255

    @property
    def scale(self) -> float:
        """Multiply values by this to get 0..255 (1 for uint8, 255 for floats in [0, 1])."""
        return self.value_range.scale

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.arrays[0].shape[1]), int(self.arrays[0].shape[2])


@dataclass
class SpotGroup:
    """The spots of one section in one image: rows of the table, centres in level-0 pixels, µm per pixel."""

    section: str
    rows: np.ndarray
    centres: np.ndarray  # (n, 2), x then y, level-0 image pixels
    mpp: float  # µm per level-0 image pixel
    image: ImageLevels
    mpp_source: str


# ---------------------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------------------
def _as_cyx(arr, dims) -> Any:
    import dask.array as da

    dims = tuple(dims)
    if set(dims) != {"c", "y", "x"}:
        raise ValueError(f"Image with dims {dims}: expected a 2D image with dims (c, y, x).")
    arr = arr if isinstance(arr, da.Array) else da.from_array(arr, chunks=(-1, 2048, 2048))
    arr = arr.transpose([dims.index(d) for d in ("c", "y", "x")])
    n_c = arr.shape[0]
    if n_c in (3, 4):
        return arr[:3]
    if n_c == 1:
        return da.concatenate([arr] * 3, axis=0)
    raise ValueError(f"Image has {n_c} channels; expected an RGB (3 or 4 channel) or grayscale image.")


# ---------------------------------------------------------------------------------------------------------
# pixel values: one rule for every reader of an image (docs/data.md, "Image values")
# ---------------------------------------------------------------------------------------------------------
_HALF = 0.5  # values within half a grey level of 0..255 round into it: rounded, never clipped


def _check_dtype(name: str, dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
        raise TypeError(
            f"The image (`image_key`) {name!r} has dtype {dtype}; expected uint8, uint16 or float (values in [0, 1] "
            "or 0..255), or another integer type holding 0..255. Convert it first, e.g. with "
            "`.astype(np.uint8) * 255` for a boolean mask."
        )
    return dtype


def _nonfinite_error(name: str, n_nan: int, n_inf: int, where: str) -> ValueError:
    what = " and ".join(p for p in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "") if p)
    return ValueError(
        f"The image (`image_key`) {name!r} holds {what} pixel value(s){where}; sthinge does not guess what a "
        "missing pixel is. Replace them first, e.g. with white background: `np.nan_to_num(image, nan=1.0, "
        "posinf=1.0, neginf=0.0)` for floats in [0, 1] (`nan=255.0, posinf=255.0` for 0..255 values)."
    )


def _negative_error(name: str, dtype, vmin: float, where: str) -> ValueError:
    return ValueError(
        f"The image (`image_key`) {name!r} ({dtype}) holds negative values (min {vmin:g}){where}; pixel values "
        "must be >= 0 and are never clipped silently. Rescale it to [0, 1] or 0..255 first (or clip it yourself, "
        "e.g. `np.clip(image, 0, None)`, if the negatives are noise)."
    )


def pixel_range(
    name: str,
    dtype,
    vmin: float | None = None,
    vmax: float | None = None,
    *,
    n_nan: int = 0,
    n_inf: int = 0,
    where: str = "",
) -> ImageRange:
    """The one rule for reading an image's values, from its dtype and its observed (finite) min and max.

    - uint8: as is;
    - uint16: max <= 255: 8-bit values as is; else the full 16-bit range, 0..65535 -> 0..255;
    - other integer types: values in 0..255 as is; else refused;
    - float: max <= 1: [0, 1] (times 255); 1 < max <= 255: 0..255 values as is; max > 255: refused;
    - NaN, infinite or negative values: refused (``ValueError``); bool, complex, ...: ``TypeError``.

    Tolerance: a value within half a grey level of the range (it rounds into 0..255) is in range. Every
    reading other than uint8 and float [0, 1] carries a ``message`` saying what was assumed.
    ``vmin``/``vmax`` are needed for every dtype but uint8; ``where`` ends the error messages.
    """
    dtype = _check_dtype(name, dtype)
    if dtype == np.uint8:
        return ImageRange(1.0, "0-255 (uint8)")
    if n_nan or n_inf:
        raise _nonfinite_error(name, n_nan, n_inf, where)
    vmin, vmax = float(vmin), float(vmax)
    if np.issubdtype(dtype, np.floating):
        if vmax * 255.0 < 255.0 + _HALF:
            rng = ImageRange(255.0, "0-1 (float)")
        elif vmax < 255.0 + _HALF:
            rng = ImageRange(
                1.0,
                "0-255 (float)",
                (
                    f"image {name!r}: {dtype} with values {vmin:g}..{vmax:g} (max > 1), read as 0..255 grey levels, "
                    "not as [0, 1]."
                ),
            )
        else:
            rng = None
        if vmin * (rng.scale if rng else 1.0) < -_HALF:
            raise _negative_error(name, dtype, vmin, where)
        if rng is not None:
            return rng
        raise ValueError(
            f"The image (`image_key`) {name!r} ({dtype}) holds values {vmin:g}..{vmax:g}{where}: floats are read "
            "as [0, 1] or 0..255, and sthinge will not guess another scale. Convert it first, e.g. "
            "`image / 65535` for 16-bit values, or `(image - lo) / (hi - lo)` to map your range onto [0, 1]."
        )
    if vmin < 0:
        raise _negative_error(name, dtype, vmin, where)
    if vmax <= 255:
        label = "0-255 (uint16, 8-bit values)" if dtype == np.uint16 else f"0-255 ({dtype})"
        return ImageRange(
            1.0,
            label,
            (
                f"image {name!r}: {dtype} with values {vmin:g}..{vmax:g} (max <= 255), read as 8-bit grey levels "
                "0..255 as they are."
            ),
        )
    if dtype == np.uint16:
        return ImageRange(
            255.0 / 65535.0,
            "0-65535 (uint16)",
            (
                f"image {name!r}: uint16 with values {vmin:g}..{vmax:g} (max > 255), read as 16-bit: 0..65535 "
                "scaled to 0..255."
            ),
        )
    raise ValueError(
        f"The image (`image_key`) {name!r} ({dtype}) holds values {vmin:g}..{vmax:g}{where}: integer images other "
        "than uint16 must hold 8-bit values 0..255. Convert it first, e.g. `image.astype(np.uint16)` for 16-bit "
        "values or `image / image.max()` for floats in [0, 1]."
    )


def image_range(name: str, arrays: list) -> ImageRange:
    """Decide :func:`pixel_range` on the coarsest level of ``arrays`` (cheap) and log what was assumed.

    A single-level image larger than 4096 px is read on a strided subsample; the tiles actually read are checked
    again (:func:`to_uint8`), so a NaN or an out-of-range value missed here still raises the same error.
    """
    import dask.array as da

    arr = arrays[-1]
    dtype = _check_dtype(name, arr.dtype)
    if dtype == np.uint8:
        return pixel_range(name, dtype)
    if arr.size == 0:
        raise ValueError(f"The image (`image_key`) {name!r} is empty (shape {tuple(arr.shape)}).")
    where = f" on its coarsest pyramid level ({arr.shape[2]} x {arr.shape[1]} px)" if len(arrays) > 1 else ""
    step = -(-max(arr.shape[1:]) // _STATS_MAX_SIDE)
    if step > 1:
        arr = arr[:, ::step, ::step]
    if np.issubdtype(dtype, np.floating):
        n_nan, n_inf, vmin, vmax = da.compute(da.isnan(arr).sum(), da.isinf(arr).sum(), arr.min(), arr.max())
    else:
        n_nan = n_inf = 0
        vmin, vmax = da.compute(arr.min(), arr.max())
    rng = pixel_range(name, dtype, vmin, vmax, n_nan=int(n_nan), n_inf=int(n_inf), where=where)
    if rng.message:
        logg.info(rng.message)
    return rng


def to_uint8(image: ImageLevels, block, where: str = "") -> np.ndarray:
    """Grey levels (uint8) of a block read from ``image``, by its :class:`ImageRange`.

    NaN or infinite values and values outside the decided range (e.g. on a finer level than the one the
    range was decided on) raise the same errors as :func:`pixel_range`; nothing is clipped silently.
    """
    block = np.asarray(block)
    if block.dtype == np.uint8:
        return block
    if block.size == 0:
        return block.astype(np.uint8)
    name, rng = image.name, image.value_range
    if np.issubdtype(block.dtype, np.floating):
        n_nan, n_inf = int(np.isnan(block).sum()), int(np.isinf(block).sum())
        if n_nan or n_inf:
            raise _nonfinite_error(name, n_nan, n_inf, where)
        v = block.astype(np.float32) * rng.scale
        low, high = -_HALF, 255.0 + _HALF
    elif rng.scale == 1.0:
        v, low, high = block, 0, 255
    else:  # the full 16-bit range: exact integer rounding of value * 255 / 65535
        return ((block.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    vmin, vmax = v.min(), v.max()
    if vmin < low:
        raise _negative_error(name, block.dtype, float(block.min()), where)
    if vmax > high or (vmax == high and v is not block):  # a float at 255.5 would round to 256
        raise ValueError(
            f"The image (`image_key`) {name!r} ({block.dtype}) holds values up to {float(block.max()):g}{where}, "
            f"beyond the range {rng.label!r} decided on its coarsest pyramid level; sthinge does not clip silently. "
            "Convert it explicitly first (to uint8, or to floats in [0, 1]); see the 'Your data' page."
        )
    if v is block:
        return block.astype(np.uint8)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def image_levels_from_element(name: str, element) -> ImageLevels:
    """Levels of a spatialdata image element (single-scale DataArray or multiscale DataTree)."""
    from xarray import DataArray

    if isinstance(element, DataArray):
        arrays = [_as_cyx(element.data, element.dims)]
    else:
        arrays = []
        for key in sorted(element.children, key=lambda k: int(k.replace("scale", "")) if k[5:].isdigit() else 0):
            ds = element[key].ds
            var = list(ds.data_vars)[0]
            arrays.append(_as_cyx(ds[var].data, ds[var].dims))
    h0, w0 = arrays[0].shape[1:]
    factors = [(h0 / a.shape[1], w0 / a.shape[2]) for a in arrays]
    return ImageLevels(name=name, arrays=arrays, factors=factors, value_range=image_range(name, arrays))


def image_levels_from_array(name: str, array: np.ndarray) -> ImageLevels:
    """Levels of a ``(y, x, c)`` numpy image (scanpy's Visium layout), without copying it."""
    import dask.array as da

    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3:
        raise ValueError(f"The image (`image_key`) {name!r} has shape {array.shape}; expected (y, x, c).")
    if array.shape[2] not in (1, 3, 4) and array.shape[0] in (1, 3, 4):
        raise ValueError(
            f"The image (`image_key`) {name!r} has shape {array.shape}, channels first; expected (y, x, c) as in "
            "scanpy's layout: store `np.moveaxis(image, 0, -1)` instead."
        )
    _check_dtype(name, array.dtype)
    arr = _as_cyx(da.from_array(array, chunks=(2048, 2048, -1)), ("y", "x", "c"))
    return ImageLevels(name=name, arrays=[arr], factors=[(1.0, 1.0)], value_range=image_range(name, [arr]))


# ---------------------------------------------------------------------------------------------------------
# spot groups
# ---------------------------------------------------------------------------------------------------------
def _per_section(name: str, value, section: str, region: str | None):
    """A scalar option, or a dict keyed by section (or region)."""
    if isinstance(value, Mapping):
        if section in value:
            return value[section]
        if region is not None and region in value:
            return value[region]
        raise KeyError(f"`{name}` is a dict without an entry for section {section!r}; keys: {list(value)}.")
    return value


def _affine(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _coordinate_systems(element) -> list[str]:
    from spatialdata.transformations import get_transformation

    return list(get_transformation(element, get_all=True).keys())


def _shape_centres(shapes, ids) -> tuple[np.ndarray, np.ndarray | None]:
    """Centres (x, y) and radii (or None) of the shapes with index ``ids``, in the shapes' own units."""
    missing = ~np.isin(ids, shapes.index.to_numpy())
    if missing.any():
        raise KeyError(
            f"{int(missing.sum())} instance id(s) of the table are not in the shapes element, e.g. "
            f"{list(np.asarray(ids)[missing][:5])}."
        )
    sub = shapes.loc[ids]
    geom = sub.geometry
    if (geom.geom_type == "Point").all():
        xy = np.stack([geom.x.to_numpy(), geom.y.to_numpy()], axis=1)
        radius = sub["radius"].to_numpy(float) if "radius" in sub else None
    else:
        cent = geom.centroid
        xy = np.stack([cent.x.to_numpy(), cent.y.to_numpy()], axis=1)
        radius = np.sqrt(geom.area.to_numpy() / np.pi)
    return xy.astype(float), radius


def _scale_of(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:2, :2]))))


def _resolve_mpp(
    section, region, *, mpp, meta, unit_scale, radius, spot_diameter_um, platform_diameter_um=None
) -> tuple[float, str]:
    """µm per level-0 image pixel. ``unit_scale`` = image pixels per spot-coordinate unit.

    ``platform_diameter_um``: the spot size of the platform the data were read from (55 µm for spatialdata-io's
    Visium reader), used when neither ``spot_diameter_um`` nor the section's metadata give one.
    """
    from sthinge._utils import _check_float

    value = _per_section("mpp", mpp, section, region) if mpp is not None else None
    if value is not None:
        return _check_float("mpp", value, low=0.0, low_open=True) / unit_scale, "argument `mpp`"
    if meta and meta.get("mpp") is not None:
        return float(meta["mpp"]) / unit_scale, f"uns[{K.UNS_SECTIONS!r}][{section!r}]['mpp']"
    diameter = spot_diameter_um if spot_diameter_um is not None else (meta or {}).get("spot_diameter_um")
    platform = diameter is None and platform_diameter_um is not None
    diameter = platform_diameter_um if platform else diameter
    if diameter is not None and radius is not None and np.isfinite(radius).any() and np.nanmedian(radius) > 0:
        d = _check_float("spot_diameter_um", diameter, low=0.0, low_open=True)
        source = f"Visium spot diameter ({d:g} µm) / shape radius" if platform else "spot diameter / shape radius"
        return d / (2.0 * float(np.nanmedian(radius))) / unit_scale, source
    raise ValueError(
        f"The image of section {section!r} has no physical scale: pass `mpp=` (µm per pixel of the spot "
        f"coordinates) or `spot_diameter_um=`, or set uns[{K.UNS_SECTIONS!r}][{section!r}]['mpp']."
    )


def _check_finite(group_name: str, xy: np.ndarray, obs_names, where: str) -> None:
    """Refuse spots whose coordinates (in ``where``, e.g. "`obsm['spatial']`") are NaN or infinite."""
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} spot(s) of section {group_name!r} have NaN or infinite coordinates in {where}, e.g. "
            f"{list(np.asarray(obs_names)[bad][:5])}; fix their coordinates or drop these spots first."
        )


def _check_unique_obs_names(table) -> None:
    """Refuse a table whose spot ids repeat: results are matched to spots by these names downstream."""
    if not table.obs_names.is_unique:
        dup = list(dict.fromkeys(table.obs_names[table.obs_names.duplicated()].astype(str)))
        raise ValueError(
            f"The table's `obs_names` (spot ids) are not unique: {len(dup)} repeated, e.g. {dup[:5]}; their "
            "embeddings could not be told apart downstream. Call `.obs_names_make_unique()` first."
        )


def _check_inside(group_name: str, centres: np.ndarray, shape: tuple[int, int], obs_names) -> None:
    h, w = shape
    bad = ~np.isfinite(centres).all(axis=1)
    bad |= (centres[:, 0] < 0) | (centres[:, 0] > w) | (centres[:, 1] < 0) | (centres[:, 1] > h)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} spot(s) of section {group_name!r} lie outside its image ({w} x {h} px), e.g. "
            f"{list(np.asarray(obs_names)[bad][:5])}; check the coordinates, `mpp` and the image/shapes "
            "transformations."
        )


def groups_from_spatialdata(sdata, table, labels, *, image_key, mpp, spot_diameter_um) -> list[SpotGroup]:
    """One :class:`SpotGroup` per (section, shapes element) of a SpatialData table."""
    import pandas as pd

    _check_unique_obs_names(table)
    meta_all = table.uns.get(K.UNS_SECTIONS, {}) or {}
    attrs = table.uns.get("spatialdata_attrs", {}) or {}
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    reader = (getattr(sdata, "attrs", None) or {}).get(SDIO_READER_KEY)
    platform_diameter = VISIUM_SPOT_DIAMETER_UM if reader == "visium" else None  # spatialdata-io's Visium reader
    regions = table.obs[region_key].astype(str).to_numpy() if region_key in table.obs else np.full(table.n_obs, None)
    if isinstance(image_key, str) and image_key not in sdata.images:
        raise KeyError(f"`image_key` {image_key!r} not found; images: {list(sdata.images.keys())}.")
    groups, read = [], {}  # read: image name -> ImageLevels (its value range decided and logged once)
    keys = list(dict.fromkeys(zip(labels.tolist(), regions.tolist())))
    for section, region in keys:
        rows = np.flatnonzero((labels == section) & (regions == region))
        meta = meta_all.get(section) if isinstance(meta_all, Mapping) else None
        shapes = sdata.shapes.get(region) if region is not None and region in sdata.shapes else None
        # image
        name = _per_section("image_key", image_key, section, region) if image_key is not None else None
        if name is None and meta and meta.get("image") in sdata.images:
            name = meta["image"]
        if name is None:
            cands = list(sdata.images.keys())
            if shapes is not None:
                cs_s = set(_coordinate_systems(shapes))
                cands = [n for n in cands if cs_s & set(_coordinate_systems(sdata.images[n]))]
            if not cands:
                raise ValueError(f"No image found for section {section!r}; pass `image_key=`.")
            if len(cands) > 1 and shapes is None:
                raise ValueError(f"Several images {cands} for section {section!r}; pass `image_key=`.")
        else:
            if name not in sdata.images:
                raise KeyError(f"`image_key` {name!r} not found; images: {list(sdata.images.keys())}.")
            cands = [name]
        # spot centres: shapes coordinates -> image pixels, through a shared coordinate system
        best = None
        for cand in cands:
            element = sdata.images[cand]
            if shapes is None:
                m = np.eye(3)
            else:
                shared = [c for c in _coordinate_systems(shapes) if c in _coordinate_systems(element)]
                if not shared:
                    raise ValueError(f"Image {cand!r} and shapes {region!r} share no coordinate system.")
                cs = section if section in shared else shared[0]
                m = np.linalg.inv(_affine(element, cs)) @ _affine(shapes, cs)
            if best is None or _scale_of(m) > _scale_of(best[1]):  # prefer the highest resolution
                best = (cand, m)
        name, m = best
        if shapes is not None and instance_key in table.obs:
            ids = table.obs[instance_key].to_numpy()[rows]
            dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique()
            if len(dup):
                raise ValueError(
                    f"{len(dup)} instance id(s) of `obs[{instance_key!r}]` repeat within region {region!r} (section "
                    f"{section!r}), e.g. {dup[:5].tolist()}: these spots would share one shape and one embedding. "
                    "Give every spot its own shape."
                )
            if not shapes.index.is_unique:
                raise ValueError(
                    f"The shapes element {region!r} has repeated index values (instance ids), e.g. "
                    f"{shapes.index[shapes.index.duplicated()][:5].tolist()}; they must be unique."
                )
            xy, radius = _shape_centres(shapes, ids)
            _check_finite(section, xy, table.obs_names[rows], f"the shapes element {region!r}")
        else:
            if K.SPATIAL_KEY not in table.obsm:
                raise KeyError(f"No shapes for section {section!r} and no `obsm[{K.SPATIAL_KEY!r}]` with spot centres.")
            xy, radius = np.asarray(table.obsm[K.SPATIAL_KEY], dtype=float)[rows, :2], None
            _check_finite(section, xy, table.obs_names[rows], f"`obsm[{K.SPATIAL_KEY!r}]`")
            logg.debug(f"section {section!r}: spot centres from obsm['spatial'], taken as pixels of {name!r}.")
        centres = (np.c_[xy, np.ones(len(xy))] @ m.T)[:, :2]
        if name not in read:
            read[name] = image_levels_from_element(name, sdata.images[name])
        levels = read[name]
        _check_inside(section, centres, levels.shape, table.obs_names[rows])
        value, source = _resolve_mpp(
            section,
            region,
            mpp=mpp,
            meta=meta,
            unit_scale=_scale_of(m),
            radius=radius,
            spot_diameter_um=spot_diameter_um,
            platform_diameter_um=platform_diameter,
        )
        groups.append(SpotGroup(section, rows, centres, value, levels, source))
    return groups


def groups_from_anndata(adata, labels, *, image_key, mpp, spot_diameter_um) -> list[SpotGroup]:
    """Spot groups of an AnnData in scanpy's Visium layout (``uns["spatial"][library_id]``)."""
    _check_unique_obs_names(adata)
    spatial = adata.uns.get("spatial")
    libs = (
        [k for k, v in spatial.items() if isinstance(v, Mapping) and v.get("images")]
        if isinstance(spatial, Mapping)
        else []
    )
    if not libs:
        raise ValueError(
            "The AnnData holds no image: expected scanpy's Visium layout uns['spatial'][library_id]['images'] "
            "(or pass a SpatialData object with images)."
        )
    if K.SPATIAL_KEY not in adata.obsm:
        raise KeyError(f"`obsm[{K.SPATIAL_KEY!r}]` (spot centres in full-resolution pixels) is missing.")
    coords = np.asarray(adata.obsm[K.SPATIAL_KEY], dtype=float)[:, :2]
    meta_all = adata.uns.get(K.UNS_SECTIONS, {}) or {}
    groups, read = [], {}  # read: image name -> ImageLevels (its value range decided and logged once)
    for section in list(dict.fromkeys(labels.tolist())):
        rows = np.flatnonzero(labels == section)
        if section in libs:
            lib = section
        elif len(libs) == 1:
            lib = libs[0]
        else:
            raise KeyError(f"Section {section!r} is not a library of uns['spatial'] ({libs}); set `section_key`.")
        info = spatial[lib]
        images, sf = info["images"], info.get("scalefactors", {}) or {}
        res = _per_section("image_key", image_key, section, None) if image_key is not None else None
        if res is None:
            res = "hires" if "hires" in images else next(iter(images))
        if res not in images:
            raise KeyError(f"`image_key` {res!r} not in uns['spatial'][{lib!r}]['images'] ({list(images)}).")
        scalef = float(sf.get(f"tissue_{res}_scalef", 1.0))
        _check_finite(section, coords[rows], adata.obs_names[rows], f"`obsm[{K.SPATIAL_KEY!r}]`")
        centres = coords[rows] * scalef
        if f"{lib}/{res}" not in read:
            read[f"{lib}/{res}"] = image_levels_from_array(f"{lib}/{res}", images[res])
        levels = read[f"{lib}/{res}"]
        _check_inside(section, centres, levels.shape, adata.obs_names[rows])
        meta = meta_all.get(section) if isinstance(meta_all, Mapping) else None
        radius = None
        if sf.get("spot_diameter_fullres"):
            radius = np.array([float(sf["spot_diameter_fullres"]) / 2.0])
            if spot_diameter_um is None and not (meta and meta.get("spot_diameter_um")):
                spot_diameter_um = VISIUM_SPOT_DIAMETER_UM
        value, source = _resolve_mpp(
            section, None, mpp=mpp, meta=meta, unit_scale=scalef, radius=radius, spot_diameter_um=spot_diameter_um
        )
        groups.append(SpotGroup(section, rows, centres, value, levels, source))
    return groups


# ---------------------------------------------------------------------------------------------------------
# tiles
# ---------------------------------------------------------------------------------------------------------
def choose_level(image: ImageLevels, side0: float, out_size: int) -> int:
    """The coarsest level on which a tile of ``side0`` level-0 pixels is still at least ``out_size`` pixels."""
    best = 0
    for k, (fy, fx) in enumerate(image.factors):
        if side0 / max(fy, fx) >= out_size:
            best = k
    return best


def crop_box(centres: np.ndarray, side: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer top-left corners (x0, y0) and the width of square windows of ``side`` px centred on ``centres``."""
    w = max(1, int(round(side)))
    x0 = np.floor(centres[:, 0] - w / 2 + 0.5).astype(int)
    y0 = np.floor(centres[:, 1] - w / 2 + 0.5).astype(int)
    return x0, y0, w


def iter_crops(
    group: SpotGroup, window_um: float, out_size: int, batch_size: int, num_workers: int = 0
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(rows, crops)`` batches: uint8 ``(B, 3, w, w)`` windows of ``window_um`` µm around the spots.

    Windows are read lazily from the pyramid level closest to (not below) the output resolution; parts outside
    the image are white (255). Memory depends on ``batch_size`` only.
    """
    import dask

    image = group.image
    side0 = window_um / group.mpp
    level = choose_level(image, side0, out_size)
    fy, fx = image.factors[level]
    arr = image.arrays[level]
    h, w_img = arr.shape[1:]
    centres = group.centres / np.array([fx, fy])
    x0, y0, w = crop_box(centres, side0 / max(fx, fy))
    where = f" in a tile of section {group.section!r} (pyramid level {level})"

    def read(idx: np.ndarray) -> np.ndarray:
        parts = []
        for i in idx:
            ya, yb = max(y0[i], 0), min(y0[i] + w, h)
            xa, xb = max(x0[i], 0), min(x0[i] + w, w_img)
            parts.append(arr[:, ya : max(yb, ya), xa : max(xb, xa)])
        blocks = dask.compute(*parts, scheduler="threads")
        out = np.full((len(idx), 3, w, w), 255, dtype=np.uint8)
        for b, (i, block) in enumerate(zip(idx, blocks)):
            block = to_uint8(image, block, where)
            ya, xa = max(y0[i], 0) - y0[i], max(x0[i], 0) - x0[i]
            out[b, :, ya : ya + block.shape[1], xa : xa + block.shape[2]] = block
        return out

    batches = [np.arange(s, min(s + batch_size, len(group.rows))) for s in range(0, len(group.rows), batch_size)]
    if num_workers and num_workers > 0:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            # at most num_workers + 1 batches in flight; a used future is dropped, so memory stays constant
            pending = deque(pool.submit(read, b) for b in batches[: num_workers + 1])
            for k, idx in enumerate(batches):
                crops = pending.popleft().result()
                nxt = k + num_workers + 1
                if nxt < len(batches):
                    pending.append(pool.submit(read, batches[nxt]))
                yield group.rows[idx], crops
    else:
        for idx in batches:
            yield group.rows[idx], read(idx)


def resample(crops, out_size: int, device=None):
    """uint8 ``(B, 3, w, w)`` crops -> float32 ``(B, 3, out_size, out_size)`` in [0, 1] (antialiased bilinear)."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(crops)
    if device is not None:
        x = x.to(device, non_blocking=True)
    x = x.float().div_(255.0)
    if x.shape[-1] != out_size:
        x = F.interpolate(x, size=(out_size, out_size), mode="bilinear", antialias=True, align_corners=False)
    return x.clamp_(0.0, 1.0)
