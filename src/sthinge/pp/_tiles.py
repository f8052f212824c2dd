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


@dataclass
class ImageLevels:
    """A (possibly multiscale) RGB image as lazy ``(c, y, x)`` arrays with their downsampling factors."""

    name: str
    arrays: list  # dask arrays (c, y, x), level 0 first
    factors: list[tuple[float, float]]  # (fy, fx) of each level relative to level 0
    scale: float = 1.0  # multiply values by this to get 0..255 (1 for uint8, 255 for floats in [0, 1])

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


def _value_scale(dtype, name: str = "") -> float:
    dtype = np.dtype(dtype)
    if not (np.issubdtype(dtype, np.floating) or dtype in (np.uint8, np.uint16)):
        raise TypeError(
            f"The image (`image_key`) {name!r} has dtype {dtype}; expected uint8, uint16 or float (values in [0, 1]). "
            "Convert it first, e.g. with `.astype(np.uint8)` for values in 0..255."
        )
    if np.issubdtype(dtype, np.floating):
        return 255.0
    if dtype == np.uint16:
        return 255.0 / 65535.0
    return 1.0


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
    return ImageLevels(name=name, arrays=arrays, factors=factors, scale=_value_scale(arrays[0].dtype, name))


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
    scale = _value_scale(array.dtype, name)
    arr = _as_cyx(da.from_array(array, chunks=(2048, 2048, -1)), ("y", "x", "c"))
    return ImageLevels(name=name, arrays=[arr], factors=[(1.0, 1.0)], scale=scale)


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
        raise KeyError(f"{int(missing.sum())} instance id(s) of the table are not in the shapes element, e.g. "
                       f"{list(np.asarray(ids)[missing][:5])}.")
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


def _resolve_mpp(section, region, *, mpp, meta, unit_scale, radius, spot_diameter_um) -> tuple[float, str]:
    """µm per level-0 image pixel. ``unit_scale`` = image pixels per spot-coordinate unit."""
    from sthinge._utils import _check_float

    value = _per_section("mpp", mpp, section, region) if mpp is not None else None
    if value is not None:
        return _check_float("mpp", value, low=0.0, low_open=True) / unit_scale, "argument `mpp`"
    if meta and meta.get("mpp") is not None:
        return float(meta["mpp"]) / unit_scale, f"uns[{K.UNS_SECTIONS!r}][{section!r}]['mpp']"
    diameter = spot_diameter_um if spot_diameter_um is not None else (meta or {}).get("spot_diameter_um")
    if diameter is not None and radius is not None and np.isfinite(radius).any() and np.nanmedian(radius) > 0:
        d = _check_float("spot_diameter_um", diameter, low=0.0, low_open=True)
        return d / (2.0 * float(np.nanmedian(radius))) / unit_scale, "spot diameter / shape radius"
    raise ValueError(
        f"The image of section {section!r} has no physical scale: pass `mpp=` (µm per pixel of the spot "
        f"coordinates) or `spot_diameter_um=`, or set uns[{K.UNS_SECTIONS!r}][{section!r}]['mpp']."
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
    meta_all = table.uns.get(K.UNS_SECTIONS, {}) or {}
    attrs = table.uns.get("spatialdata_attrs", {}) or {}
    region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
    regions = (
        table.obs[region_key].astype(str).to_numpy() if region_key in table.obs else np.full(table.n_obs, None)
    )
    if isinstance(image_key, str) and image_key not in sdata.images:
        raise KeyError(f"`image_key` {image_key!r} not found; images: {list(sdata.images.keys())}.")
    groups = []
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
            xy, radius = _shape_centres(shapes, table.obs[instance_key].to_numpy()[rows])
        else:
            if K.SPATIAL_KEY not in table.obsm:
                raise KeyError(f"No shapes for section {section!r} and no `obsm[{K.SPATIAL_KEY!r}]` with spot centres.")
            xy, radius = np.asarray(table.obsm[K.SPATIAL_KEY], dtype=float)[rows, :2], None
            logg.debug(f"section {section!r}: spot centres from obsm['spatial'], taken as pixels of {name!r}.")
        centres = (np.c_[xy, np.ones(len(xy))] @ m.T)[:, :2]
        levels = image_levels_from_element(name, sdata.images[name])
        _check_inside(section, centres, levels.shape, table.obs_names[rows])
        value, source = _resolve_mpp(
            section, region, mpp=mpp, meta=meta, unit_scale=_scale_of(m), radius=radius,
            spot_diameter_um=spot_diameter_um,
        )
        groups.append(SpotGroup(section, rows, centres, value, levels, source))
    return groups


def groups_from_anndata(adata, labels, *, image_key, mpp, spot_diameter_um) -> list[SpotGroup]:
    """Spot groups of an AnnData in scanpy's Visium layout (``uns["spatial"][library_id]``)."""
    spatial = adata.uns.get("spatial")
    libs = [k for k, v in spatial.items() if isinstance(v, Mapping) and v.get("images")] if isinstance(
        spatial, Mapping) else []
    if not libs:
        raise ValueError(
            "The AnnData holds no image: expected scanpy's Visium layout uns['spatial'][library_id]['images'] "
            "(or pass a SpatialData object with images)."
        )
    if K.SPATIAL_KEY not in adata.obsm:
        raise KeyError(f"`obsm[{K.SPATIAL_KEY!r}]` (spot centres in full-resolution pixels) is missing.")
    coords = np.asarray(adata.obsm[K.SPATIAL_KEY], dtype=float)[:, :2]
    meta_all = adata.uns.get(K.UNS_SECTIONS, {}) or {}
    groups = []
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
        centres = coords[rows] * scalef
        levels = image_levels_from_array(f"{lib}/{res}", images[res])
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

    def read(idx: np.ndarray) -> np.ndarray:
        parts = []
        for i in idx:
            ya, yb = max(y0[i], 0), min(y0[i] + w, h)
            xa, xb = max(x0[i], 0), min(x0[i] + w, w_img)
            parts.append(arr[:, ya:max(yb, ya), xa:max(xb, xa)])
        blocks = dask.compute(*parts, scheduler="threads")
        out = np.full((len(idx), 3, w, w), 255, dtype=np.uint8)
        for b, (i, block) in enumerate(zip(idx, blocks)):
            block = np.asarray(block)
            if image.scale != 1.0 or block.dtype != np.uint8:
                block = np.clip(np.rint(block.astype(np.float32) * image.scale), 0, 255).astype(np.uint8)
            ya, xa = max(y0[i], 0) - y0[i], max(x0[i], 0) - x0[i]
            out[b, :, ya : ya + block.shape[1], xa : xa + block.shape[2]] = block
        return out

    batches = [np.arange(s, min(s + batch_size, len(group.rows))) for s in range(0, len(group.rows), batch_size)]
    if num_workers and num_workers > 0:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=num_workers) as pool:
            pending = [pool.submit(read, b) for b in batches[: num_workers + 1]]
            for k, idx in enumerate(batches):
                crops = pending[k].result()
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
