"""Whole-slide images as lazy multiscale SpatialData images: :func:`read_slide`.

Slides are read with `tiffslide <https://github.com/Bayer-Group/tiffslide>`_, a pure-Python reader built on
tifffile that opens Aperio SVS, generic pyramidal TIFF and OME-TIFF files (Hamamatsu NDPI partially). It was chosen
over openslide-python because it needs no C library: openslide-python only works where the OpenSlide shared library
is installed on the system (apt, brew, conda), while tiffslide installs from PyPI like any other dependency.

Each pyramid level of the slide becomes one level of an :class:`~spatialdata.models.Image2DModel` multiscale image,
read lazily through tiffslide's zarr view of the file (nothing is decoded until a region is computed). The slide's
pixel size is recorded in ``sdata.attrs["sthinge_slides"][image_key]``, where :func:`sthinge.pp.make_grid` finds it.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge._logging import logg
from sthinge._utils import _check_float, _check_int

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["read_slide"]

#: ``SpatialData.attrs`` entry written by :func:`read_slide`: ``{image_key: {"mpp", "mpp_source", "path"}}``.
SLIDES_KEY = "sthinge_slides"
_IMAGE_SUFFIX = "_image"  # as sthinge._constants.IMAGE_SUFFIX: make_grid drops it to name the section
_MPP_RTOL = 0.01  # `mpp=` and the slide's metadata (or its x and y pixel sizes) may differ by this much silently
#: A pixel size above this (in µm; 254 dpi) is a screen or print resolution that image software writes by default
#: (72, 96, 150 or 200 dpi), not the one of a microscope: it is treated as no pixel size.
_MAX_PLAUSIBLE_MPP = 100.0
_CHUNK_PX = 1024  # default side of the dask chunks, rounded to whole tiles of the file
_RGB_PHOTOMETRIC = ("RGB", "YCBCR")  # tifffile decodes YCbCr (JPEG) tiles to RGB
#: OME ``PhysicalSizeXUnit`` -> µm (the OME default unit is µm)
_OME_UNIT_UM = {
    "pm": 1e-6,
    "Å": 1e-4,
    "nm": 1e-3,
    "µm": 1.0,  # micro sign
    "μm": 1.0,  # Greek mu
    "um": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "dm": 1e5,
    "m": 1e6,
}
_NAME_OK = re.compile(r"[A-Za-z0-9_-]")


class _SlideError(ValueError):
    """A refusal that names the slide: raised as a plain ValueError, never re-wrapped as 'cannot be read'."""


# ---------------------------------------------------------------------------------------------------------------------
# arguments


def _check_path(path: Any) -> Path:
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a path (str or os.PathLike) to a slide file, got {type(path).__name__}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r}: no such file.")
    if path.is_dir():
        raise ValueError(
            f"`path` {str(path)!r} is a folder, not a slide file (for a SpatialData .zarr folder use "
            "`spatialdata.read_zarr`)."
        )
    return path


def _check_name(name: str, value: Any) -> str:
    """A valid SpatialData element / coordinate system name (the rules of ``spatialdata``), else raise naming it."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"`{name}` must be a non-empty string or None, got {value!r}.")
    if value in (".", "..") or value.startswith("__") or not all(c.isalnum() or c in "_-." for c in value):
        raise ValueError(
            f"`{name}` {value!r} is not a valid SpatialData name: use letters, digits, '_', '-' and '.', not "
            "starting with '__'."
        )
    return value


def _default_key(path: Path) -> str:
    """The file name without its extension (and a ``.ome`` before it), as a valid element name."""
    base, dot, _ = path.name.rpartition(".")
    stem = base if dot and base else path.name
    if stem.lower().endswith(".ome"):  # "x.ome.tif" -> "x"
        stem = stem[: -len(".ome")]
    key = "".join(c if _NAME_OK.fullmatch(c) else "_" for c in stem).lstrip("_-")
    return key or "slide"


# ---------------------------------------------------------------------------------------------------------------------
# the slide


def _unreadable(path: Path, err: BaseException) -> ValueError:
    return ValueError(
        f"`path` {str(path)!r} cannot be read as a slide (SVS, pyramidal TIFF or OME-TIFF): it is corrupt, truncated "
        f"or in a format tiffslide does not read ({type(err).__name__}: {err})."
    )


def _series(slide):
    return slide.ts_tifffile.series[int(slide.properties.get("tiffslide.series-index") or 0)]


def _check_complete(path: Path, slide) -> None:
    """Every tile / strip of every level lies inside the file (a truncated file is refused before any read)."""
    tf = slide.ts_tifffile
    size = tf.filehandle.size
    for k, level in enumerate(_series(slide).levels):
        for page in level.pages:
            if page is None:
                continue
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
            if len(offsets) and np.any((counts > 0) & (offsets + counts > size)):
                raise _SlideError(
                    f"`path` {str(path)!r} cannot be read as a slide: it is truncated (pyramid level {k} needs bytes "
                    f"up to {int((offsets + counts).max()):,}, the file has {size:,})."
                )


def _rgb_levels(path: Path, slide, chunks: int | None) -> list:
    """The slide's levels as lazy dask arrays ``(3, y, x)`` of uint8 RGB, level 0 first."""
    import dask.array as da

    props = slide.properties
    if props.get("tiffslide.series-composition"):
        raise _SlideError(
            f"`path` {str(path)!r} holds several separately scanned regions (e.g. a Leica SCN with more than one "
            "area), which read_slide does not assemble; export the slide as one pyramidal (OME-)TIFF."
        )
    axes = props.get("tiffslide.series-axes")
    page = _series(slide).keyframe
    photometric = getattr(page.photometric, "name", str(page.photometric))
    group = slide.zarr_group
    levels = []
    for k in range(slide.level_count):
        arr = group[str(k)]
        if axes == "YXS":
            n_channels = arr.shape[2]
        elif axes == "CYX":
            n_channels = arr.shape[0]
        else:  # "YX": one channel
            n_channels = 1
        if k == 0:
            if n_channels not in (3, 4) or photometric not in _RGB_PHOTOMETRIC:
                raise _SlideError(
                    f"`path` {str(path)!r} is not an RGB slide: {n_channels} channel(s) (axes {axes!r}, photometric "
                    f"{photometric}); read_slide reads brightfield H&E slides (RGB, or RGBA whose alpha is dropped)."
                )
            if np.dtype(arr.dtype) != np.uint8:
                raise _SlideError(
                    f"`path` {str(path)!r} holds {np.dtype(arr.dtype)} pixels; read_slide reads 8-bit (uint8) RGB "
                    "slides."
                )
        tile = arr.chunks
        if chunks is None:
            side = [t if t >= _CHUNK_PX else (_CHUNK_PX // t) * t for t in tile]
        else:
            side = [chunks] * len(tile)
        if axes == "YXS":
            lazy = da.from_zarr(arr, chunks=(side[0], side[1], -1)).transpose(2, 0, 1)
        else:
            lazy = da.from_zarr(arr, chunks=(-1, side[1], side[2]))
        levels.append(lazy[:3])  # RGBA -> RGB
    # decode one tile of the coarsest level: a compression this installation cannot decode fails here, not later
    levels[-1][:, :1, :1].compute()
    return levels


# ---------------------------------------------------------------------------------------------------------------------
# pixel size


def _ome_mpp(slide) -> tuple[list[float | None], str | None]:
    """``([mpp_x, mpp_y], problem)`` from the OME-XML ``PhysicalSizeX``/``Y`` of the slide's image, in µm."""
    import xml.etree.ElementTree as ET

    tf = slide.ts_tifffile
    xml = tf.ome_metadata if getattr(tf, "is_ome", False) else None
    if not xml:
        return [None, None], None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as err:
        return [None, None], f"its OME-XML is malformed ({err})"
    pixels = [p for image in root.iter() if image.tag.endswith("}Image") for p in image if p.tag.endswith("}Pixels")]
    if not pixels:
        return [None, None], None
    index = int(slide.properties.get("tiffslide.series-index") or 0)
    attrs = pixels[index if index < len(pixels) else 0].attrib
    out: list[float | None] = []
    for ax in ("X", "Y"):
        value, unit = attrs.get(f"PhysicalSize{ax}"), attrs.get(f"PhysicalSize{ax}Unit", "µm")  # OME default: µm
        if value is None:
            out.append(None)
        elif unit not in _OME_UNIT_UM:
            return [None, None], f"its OME-XML PhysicalSize{ax}Unit {unit!r} is not a length"
        else:
            try:
                out.append(float(value) * _OME_UNIT_UM[unit])
            except ValueError:
                return [None, None], f"its OME-XML PhysicalSize{ax} {value!r} is not a number"
    return out, None


def _metadata_mpp(slide) -> tuple[float | None, str, str | None]:
    """``(µm per level-0 pixel or None, where it was found, why none was used or None)``."""
    import tiffslide

    sizes, problem = _ome_mpp(slide)
    where = "its OME-XML (PhysicalSizeX/Y)"
    if problem is not None:
        return None, where, problem
    if sizes == [None, None]:
        props = slide.properties
        sizes = [props.get(tiffslide.PROPERTY_NAME_MPP_X), props.get(tiffslide.PROPERTY_NAME_MPP_Y)]
        vendor = props.get(tiffslide.PROPERTY_NAME_VENDOR)
        where = f"its {vendor} metadata" if vendor else "its TIFF resolution tags"
    values = []
    for v in sizes:
        try:
            v = float(v) if v is not None else None
        except (TypeError, ValueError):
            v = None
        if v is not None and math.isfinite(v) and v > 0:
            values.append(v)
    if not values:
        return None, where, None
    if len(values) == 2 and abs(values[0] - values[1]) > _MPP_RTOL * min(values):
        logg.warning(
            f"read_slide: the pixels are not square in {where} ({values[0]:g} x {values[1]:g} µm); using the mean "
            f"{sum(values) / 2:g} µm per pixel."
        )
    value = sum(values) / len(values)
    if value > _MAX_PLAUSIBLE_MPP:
        return (
            None,
            where,
            (
                f"the {value:g} µm per pixel ({25400 / value:.4g} dpi) in {where} is a screen or print resolution that "
                "image software writes by default, not the one of a slide scanner"
            ),
        )
    return value, where, None


# ---------------------------------------------------------------------------------------------------------------------
# the multiscale image


def _multiscale(levels: list, coordinate_system: str):
    """A DataTree ``scale0``, ``scale1``, ... of DataArrays ``image`` in spatialdata's multiscale layout.

    Every level keeps the slide's own pixels; its transformation is ``Scale(level-0 size / level size)`` followed by
    the identity to ``coordinate_system`` (spatialdata derives the scale from the shapes, as for a pyramid it builds).
    """
    import xarray as xr
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, set_transformation

    h0, w0 = levels[0].shape[1:]
    nodes = {}
    for k, arr in enumerate(levels):
        h, w = arr.shape[1:]
        coords = {  # pixel centres in level-0 pixels, as spatialdata computes them for a multiscale image
            "c": ["r", "g", "b"],
            "y": (np.arange(h) + 0.5) * (h0 / h),
            "x": (np.arange(w) + 0.5) * (w0 / w),
        }
        nodes[f"scale{k}"] = xr.Dataset({"image": xr.DataArray(arr, dims=("c", "y", "x"), coords=coords)})
    tree = xr.DataTree.from_dict(nodes)
    set_transformation(tree, {coordinate_system: Identity()}, set_all=True)
    Image2DModel().validate(tree)
    return tree


# ---------------------------------------------------------------------------------------------------------------------


def read_slide(
    path: str | os.PathLike,
    *,
    mpp: float | None = None,
    image_key: str | None = None,
    coordinate_system: str | None = None,
    chunks: int | None = None,
) -> SpatialData:
    """Read a whole-slide image (SVS, pyramidal TIFF, OME-TIFF) lazily as a multiscale SpatialData image.

    The slide is opened with tiffslide (pure Python on tifffile; no OpenSlide C library to install). Each of its
    pyramid levels becomes a level of one :class:`~spatialdata.models.Image2DModel` image with dims ``(c, y, x)``:
    3 channels ``r, g, b`` (an alpha channel is dropped), uint8, as lazy dask arrays over the file. Nothing is decoded
    until a region is computed, so a slide of any size opens in a moment; the file must stay in place while ``sdata``
    is used (or write ``sdata`` to a .zarr). Level ``k`` maps to level-0 pixels by ``Scale(level-0 size / level-k
    size)``, and level 0 to ``coordinate_system`` by the identity: coordinates are level-0 pixels, as everywhere in
    sthinge.

    The pixel size (µm per level-0 pixel) is read from the slide's metadata: the OME-XML ``PhysicalSizeX``/``Y`` of an
    OME-TIFF (with its unit), the Aperio ``MPP`` field of an SVS, or the TIFF resolution tags (per cm or inch) of
    other TIFFs. A resolution coarser than 100 µm per pixel (254 dpi, e.g. the 72 dpi that image software writes by
    default) is not a scanner's and counts as none. The value used is recorded in
    ``sdata.attrs["sthinge_slides"][image_key] = {"mpp", "mpp_source", "path"}`` (``"mpp_source"``: ``"metadata"``
    or ``"argument"``), which :func:`sthinge.pp.make_grid` reads when it is not given ``mpp=``, and which is kept by
    ``sdata.write`` and :func:`spatialdata.read_zarr`.

    Parameters
    ----------
    path
        The slide file: Aperio ``.svs``, a generic pyramidal ``.tif``/``.tiff`` or an ``.ome.tif``; Hamamatsu
        ``.ndpi`` partly (tiffslide warns). A single-level TIFF gives a one-level image.
    mpp
        Micrometres per pixel of the slide's full-resolution level. Default: the one in its metadata; a slide without
        one is refused unless ``mpp`` is given. When both exist and differ by more than 1 %, ``mpp`` is used with a
        warning.
    image_key
        Name of the image element. Default: the file name without its extension(s) (``.svs``, ``.ome.tif``, ...),
        with characters other than letters, digits, ``_`` and ``-`` replaced by ``_``.
    coordinate_system
        Coordinate system of the image (identity from level-0 pixels). Default: the section name that
        :func:`sthinge.pp.make_grid` derives from ``image_key`` (``image_key`` without a ``"_image"`` suffix), as in
        sthinge's layout, where each section has its own coordinate system.
    chunks
        Side (pixels) of the dask chunks of every level. Default: about 1024, rounded to whole tiles of the file
        (a chunk is read and decoded as a whole).

    Returns
    -------
    A new SpatialData holding the image ``images[image_key]`` (multiscale: ``scale0`` is the slide's level 0, and so
    on) and ``attrs["sthinge_slides"][image_key]``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        The file cannot be read as a slide (corrupt, truncated, not a TIFF), is not an 8-bit RGB(A) slide, or has no
        pixel size in its metadata and no ``mpp`` is given; or an argument is out of range.
    TypeError
        An argument has the wrong type.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.io.read_slide("slide.svs")  # doctest: +SKIP
    >>> sdata.attrs["sthinge_slides"]["slide"]["mpp"]  # doctest: +SKIP
    0.2527
    >>> sdata = st.io.read_slide("scan.ome.tif", mpp=0.5, image_key="S1_image")  # doctest: +SKIP
    >>> st.pp.make_grid(sdata, "S1_image", spacing_um=100)  # doctest: +SKIP
    >>> st.pp.embed_histology(sdata, table_key="S1_grid_table")  # doctest: +SKIP
    """
    from spatialdata import SpatialData

    # every argument is checked before the file is opened
    if mpp is not None:
        mpp = _check_float("mpp", mpp, low=0.0, low_open=True)
    if image_key is not None:
        image_key = _check_name("image_key", image_key)
    if coordinate_system is not None:
        coordinate_system = _check_name("coordinate_system", coordinate_system)
    if chunks is not None:
        chunks = _check_int("chunks", chunks, low=1)
    path = _check_path(path)
    if image_key is None:
        image_key = _default_key(path)
    if coordinate_system is None:
        section = image_key[: -len(_IMAGE_SUFFIX)] if image_key.endswith(_IMAGE_SUFFIX) else image_key
        coordinate_system = section or image_key

    try:
        import tiffslide
    except ImportError as err:  # pragma: no cover - a declared dependency
        raise ImportError("read_slide needs the 'tiffslide' package: `pip install tiffslide`.") from err

    try:
        slide = tiffslide.TiffSlide(path)
    except Exception as err:  # tifffile raises TiffFileError, struct.error, IndexError, ... on a bad file
        raise _unreadable(path, err) from err
    try:
        _check_complete(path, slide)
        levels = _rgb_levels(path, slide, chunks)
        meta_mpp, meta_where, meta_problem = _metadata_mpp(slide)
    except _SlideError as err:
        slide.close()
        raise ValueError(str(err)) from None
    except Exception as err:
        slide.close()
        raise _unreadable(path, err) from err

    if mpp is None:
        if meta_mpp is None:
            slide.close()
            why = f" ({meta_problem})" if meta_problem else ""
            raise ValueError(
                f"The slide `path` {str(path)!r} has no pixel size in its metadata{why}: pass `mpp=` (micrometres per "
                "pixel of its full-resolution level)."
            )
        value, source = meta_mpp, "metadata"
    else:
        if meta_mpp is not None and abs(mpp - meta_mpp) > _MPP_RTOL * meta_mpp:
            logg.warning(
                f"read_slide: `mpp`={mpp:g} differs from the {meta_mpp:g} µm per pixel in {meta_where} of "
                f"{str(path)!r}; using `mpp`."
            )
        value, source = mpp, "argument"

    tree = _multiscale(levels, coordinate_system)
    record = {"mpp": float(value), "mpp_source": source, "path": str(path.resolve())}
    shapes = ", ".join(f"{a.shape[2]} x {a.shape[1]}" for a in levels)
    logg.info(f"read_slide: {str(path)!r} as {image_key!r}, {len(levels)} level(s) ({shapes} px), {value:g} µm/px.")
    # the slide stays open: the dask arrays read its tiles on demand
    return SpatialData(images={image_key: tree}, attrs={SLIDES_KEY: {image_key: record}})
