"""One sample of HEST-1k (Jaume et al., 2024) in sthinge's SpatialData layout: :func:`read_hest`.

A local copy of HEST-1k (or a part of it, as downloaded from the Hugging Face dataset ``MahmoodLab/hest``) keeps each
kind of file in its own folder, named by the sample id: ``st/{id}.h5ad`` (spot counts, spot centres in pixels of the
full-resolution slide in ``obsm["spatial"]``), ``wsis/{id}.tif`` (the pyramidal H&E slide) and
``metadata/{id}.json`` (pixel size, spot diameter, technology, organ, ...). The other folders of the dataset
(patches, thumbnails, tissue and cell segmentations, transcripts) are not read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import numbers
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _check_float, _check_int

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

__all__ = ["read_hest"]

_ST, _WSIS, _METADATA = "st", "wsis", "metadata"
_WSI_SUFFIXES = (".tif", ".tiff")
_MPP_KEY = "pixel_size_um_estimated"  # the pixel size HEST's own reader works with
_DIAMETER_KEY = "spot_diameter"  # µm
_SPACING_KEY = "inter_spot_dist"  # µm
_VISIUM_SPOT_DIAMETER_UM = 55.0
_MPP_RTOL = 0.01  # as io.read_slide: pixel sizes that differ by less are the same
_SHOW = 20  # sample ids listed in an error message


# ---------------------------------------------------------------------------------------------------------------------
# where the sample's files are


def _check_text(name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be a string or None, got {type(value).__name__} {value!r}.")
    if not value:
        raise ValueError(f"`{name}` must not be empty.")
    return value


def _samples(root: Path) -> list[str]:
    return sorted(p.name[: -len(".h5ad")] for p in (root / _ST).glob("*.h5ad") if p.is_file())


def _listing(ids: list[str]) -> str:
    more = f" and {len(ids) - _SHOW} more" if len(ids) > _SHOW else ""
    return f"{ids[:_SHOW]}{more}"


def _locate(path: Any, sample_id: str | None) -> tuple[Path, str]:
    """``(HEST root folder, sample id)`` from ``path`` (the root, or one file of the sample) and ``sample_id``."""
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"`path` must be a path (str or os.PathLike) to a HEST folder, got {type(path).__name__}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r}: no such folder or file.")
    if path.is_file():
        kinds = {_ST: (".h5ad",), _WSIS: _WSI_SUFFIXES, _METADATA: (".json",)}
        suffix = next((s for s in kinds.get(path.parent.name, ()) if path.name.endswith(s)), None)
        if suffix is None:
            raise ValueError(
                f"`path` {str(path)!r} is not a file of a HEST sample: pass the HEST folder (holding st/, wsis/ and "
                "metadata/) or one of st/<id>.h5ad, wsis/<id>.tif, metadata/<id>.json."
            )
        file_id = path.name[: -len(suffix)]
        if sample_id is not None and sample_id != file_id:
            raise ValueError(f"`sample_id` {sample_id!r} contradicts `path` {str(path)!r} (sample {file_id!r}).")
        root, sample_id = path.parent.parent, file_id
        if not (root / _ST / f"{sample_id}.h5ad").is_file():
            raise FileNotFoundError(
                f"`path` {str(path)!r}: the counts of sample {sample_id!r}, {str(root / _ST / sample_id)!r}.h5ad, "
                "are missing."
            )
        return root, sample_id

    root = path
    if not (root / _ST).is_dir():
        raise FileNotFoundError(
            f"`path` {str(root)!r} is not a HEST folder: it has no {_ST}/ folder (expected st/<id>.h5ad, "
            "wsis/<id>.tif and metadata/<id>.json)."
        )
    ids = _samples(root)
    if not ids:
        raise FileNotFoundError(f"`path` {str(root)!r} holds no HEST sample: {str(root / _ST)!r} has no .h5ad file.")
    if sample_id is None:
        if len(ids) > 1:
            raise ValueError(
                f"`path` {str(root)!r} holds {len(ids)} HEST samples: pass `sample_id=`, one of {_listing(ids)}."
            )
        return root, ids[0]
    if sample_id not in ids:
        raise FileNotFoundError(
            f"`sample_id` {sample_id!r}: no such sample in {str(root)!r} (no {_ST}/{sample_id}.h5ad); the samples "
            f"there are {_listing(ids)}."
        )
    return root, sample_id


def _wsi_file(root: Path, sample_id: str) -> Path:
    for suffix in _WSI_SUFFIXES:
        candidate = root / _WSIS / f"{sample_id}{suffix}"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"The slide of HEST sample {sample_id!r} is missing: no {str(root / _WSIS / sample_id)!r}.tif (download the "
        "wsis/ folder of the sample, from the `path` given)."
    )


# ---------------------------------------------------------------------------------------------------------------------
# metadata


def _read_metadata(root: Path, sample_id: str) -> tuple[Path, dict]:
    file = root / _METADATA / f"{sample_id}.json"
    if not file.is_file():
        raise FileNotFoundError(
            f"The metadata of HEST sample {sample_id!r} are missing: no {str(file)!r} (download the metadata/ folder "
            "of the sample, from the `path` given)."
        )
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"The metadata file {str(file)!r} is not valid JSON ({err}).") from err
    if not isinstance(meta, dict):
        raise ValueError(f"The metadata file {str(file)!r} holds a {type(meta).__name__}, not a JSON object.")
    return file, meta


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _meta_length(meta: dict, key: str, file: Path) -> float | None:
    """A positive finite number (µm) stored under ``key``, None if absent; raise naming the key if it is not one."""
    value = meta.get(key)
    if _missing(value):
        return None
    if isinstance(value, str):  # written as text by some tools: "0.2737"
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value > 0):
        raise ValueError(f"{key!r} in {str(file)!r} must be a positive number (µm), got {meta.get(key)!r}.")
    return float(value)


def _spot_diameter(meta: dict, file: Path, sample_id: str) -> tuple[float, str]:
    """``(spot diameter in µm, where it came from)`` from the metadata, with the documented fallbacks."""
    value = _meta_length(meta, _DIAMETER_KEY, file)
    if value is not None:
        return value, "metadata"
    technology = str(meta.get("st_technology") or "")
    if "visium" in technology.lower() and "hd" not in technology.lower():
        logg.warning(
            f"read_hest: {str(file)!r} has no {_DIAMETER_KEY!r}; using the {_VISIUM_SPOT_DIAMETER_UM:g} µm spots of "
            f"{technology} (pass `spot_diameter_um=` to set it)."
        )
        return _VISIUM_SPOT_DIAMETER_UM, "visium default"
    spacing = _meta_length(meta, _SPACING_KEY, file)
    if spacing is not None:
        logg.warning(
            f"read_hest: {str(file)!r} has no {_DIAMETER_KEY!r}; drawing the spots as circles of the "
            f"{_SPACING_KEY!r} {spacing:g} µm (the side of the square pseudo-spots HEST pools Xenium transcripts "
            "into; pass `spot_diameter_um=` to set it)."
        )
        return spacing, _SPACING_KEY
    raise ValueError(
        f"HEST sample {sample_id!r} has no spot size: {str(file)!r} has neither {_DIAMETER_KEY!r} nor "
        f"{_SPACING_KEY!r} (st_technology {technology or None!r}); pass `spot_diameter_um=`."
    )


# ---------------------------------------------------------------------------------------------------------------------
# the slide


def _slide_mpp(path: Path) -> tuple[float | None, str, bool]:
    """``(µm per level-0 pixel in the slide's own metadata or None, where, whether the file opened)``."""
    import tiffslide

    from sthinge.io._slide import _metadata_mpp

    try:
        slide = tiffslide.TiffSlide(path)
    except Exception:  # read_slide says what is wrong with the file
        return None, "", False
    try:
        value, where, _ = _metadata_mpp(slide)
    except Exception:
        return None, "", False
    finally:
        slide.close()
    return value, where, True


class _DropSlideMppWarning(logging.Filter):
    """Drops read_slide's "`mpp`=... differs" warning: read_hest has already said which pixel size it uses."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("read_slide: `mpp`=")


@contextlib.contextmanager
def _quiet_mpp_warning():
    drop = _DropSlideMppWarning()
    logg.addFilter(drop)
    try:
        yield
    finally:
        logg.removeFilter(drop)


# ---------------------------------------------------------------------------------------------------------------------
# the spots


def _counts(adata, layer: str | None, file: Path):
    """The counts of ``adata`` (X or ``layers[layer]``) as an integer CSR matrix, refused unless whole and >= 0."""
    import scipy.sparse as sp

    where = "X" if layer is None else f"layers[{layer!r}]"
    X = adata.X if layer is None else adata.layers[layer]
    if X is None:
        raise ValueError(f"{str(file)!r} has no counts in {where}.")
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    values = X.data if sp.issparse(X) else X
    dtype = np.dtype(values.dtype)
    if dtype == np.bool_ or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise ValueError(f"The counts in {where} of {str(file)!r} are {dtype}, not numbers.")
    if np.issubdtype(dtype, np.floating):
        if not np.isfinite(values).all():
            raise ValueError(f"The counts in {where} of {str(file)!r} hold NaN or infinite values.")
        fractional = values != np.round(values)
        if fractional.any():
            example = float(values[fractional].flat[0])
            other = " or another of its layers (`layer=`)" if layer is None else ""
            raise ValueError(
                f"The counts in {where} of {str(file)!r} are not integers (e.g. {example:g}): sthinge needs the raw "
                f"counts HEST ships; pass an h5ad with raw counts in X{other}."
            )
    if values.size and values.min() < 0:
        raise ValueError(f"The counts in {where} of {str(file)!r} are negative (min {values.min()}).")
    top = values.max() if values.size else 0
    int_dtype = np.int32 if top <= np.iinfo(np.int32).max else np.int64
    counts = sp.csr_matrix(X.astype(int_dtype) if sp.issparse(X) else X.astype(int_dtype))
    counts.eliminate_zeros()
    return counts


def _spot_xy(adata, file: Path) -> np.ndarray:
    """Spot centres (n, 2), x then y, in pixels of the full-resolution slide."""
    if "spatial" in adata.obsm:
        xy, where = np.asarray(adata.obsm["spatial"]), "obsm['spatial']"
    elif {"pxl_col_in_fullres", "pxl_row_in_fullres"} <= set(adata.obs.columns):
        xy = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy()
        where = "obs['pxl_col_in_fullres'/'pxl_row_in_fullres']"
    else:
        raise ValueError(
            f"{str(file)!r} has no spot positions: neither obsm['spatial'] nor obs['pxl_col_in_fullres'] and "
            "obs['pxl_row_in_fullres']."
        )
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"{where} of {str(file)!r} must be (n_spots, 2) (x, y), got shape {xy.shape}.")
    try:
        xy = xy.astype(float)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} of {str(file)!r} is not numeric ({err}).") from err
    if not np.isfinite(xy).all():
        raise ValueError(f"{where} of {str(file)!r} holds NaN or infinite positions.")
    return xy


def _array_xy(obs) -> np.ndarray | None:
    """Spot grid indices (array_col, array_row) where HEST has them, else None."""
    import pandas as pd

    if not {"array_col", "array_row"} <= set(obs.columns):
        return None
    grid = obs[["array_col", "array_row"]].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(grid).all():
        return None
    return np.round(grid).astype(int)


def _obs_extra(obs) -> dict:
    """HEST's own obs columns, kept unless they would replace one of sthinge's (numbers as is, others as text)."""
    import pandas as pd

    reserved = {K.SECTION_KEY, K.PATIENT_KEY, K.ARRAY_X, K.ARRAY_Y, K.REGION_KEY, K.INSTANCE_KEY}
    extra, skipped = {}, []
    for name in obs.columns:
        key = str(name)
        if key in reserved:
            skipped.append(key)
            continue
        column = obs[name]
        if isinstance(column.dtype, pd.CategoricalDtype):
            extra[key] = pd.Categorical(column.astype(str).to_numpy()) if column.isna().any() else column.array
        elif pd.api.types.is_bool_dtype(column) or pd.api.types.is_numeric_dtype(column):
            extra[key] = column.to_numpy()
        else:
            extra[key] = column.astype(str).to_numpy(dtype=object)
    if skipped:
        logg.info(f"read_hest: obs column(s) {skipped} of the h5ad are replaced by sthinge's own.")
    return extra


def read_hest(
    path: str | os.PathLike,
    sample_id: str | None = None,
    *,
    section: str | None = None,
    patient: str | None = None,
    mpp: float | None = None,
    spot_diameter_um: float | None = None,
    layer: str | None = None,
    chunks: int | None = None,
) -> SpatialData:
    """Read one HEST-1k sample (spot counts and its whole-slide H&E image) into sthinge's SpatialData layout.

    HEST-1k keeps each kind of file in a folder of its own, named by the sample id (e.g. ``TENX95``):
    ``st/{id}.h5ad`` (raw counts in ``X``, gene symbols as ``var_names``, barcodes as ``obs_names``, spot centres
    in pixels of the full-resolution slide in ``obsm["spatial"]``), ``wsis/{id}.tif`` (pyramidal TIFF) and
    ``metadata/{id}.json`` (``pixel_size_um_estimated``, ``spot_diameter``, ``inter_spot_dist``,
    ``st_technology``, ``organ``, ``species``, ...). These three files are read; the other folders (patches,
    thumbnails, segmentations, transcripts) are not needed.

    The slide is read lazily with :func:`sthinge.io.read_slide` (nothing is decoded until a region is used, so the
    slide file must stay in place), at the pixel size of the metadata, ``pixel_size_um_estimated``: the one
    HEST's own reader and its patches use, estimated from the spot grid that the positions are in. When the TIFF
    records another pixel size (by more than 1 %), the metadata's is used with a warning; when the metadata have
    none, the TIFF's is used.

    Parameters
    ----------
    path
        The HEST folder (holding ``st/``, ``wsis/`` and ``metadata/``), or one file of the sample
        (``st/{id}.h5ad``, ``wsis/{id}.tif`` or ``metadata/{id}.json``), which names it.
    sample_id
        The sample to read (``"TENX95"``). Needed when ``path`` is a folder holding several samples (those with a
        ``st/{id}.h5ad``); with one only, or with a file as ``path``, it may be left out.
    section
        Name of the section in sthinge's layout: its coordinate system and the prefix of its elements. Default:
        ``sample_id``.
    patient
        Value of ``obs["patient"]``. Default: the metadata's ``patient`` where it is given, else ``sample_id``.
    mpp
        Micrometres per pixel of the slide's full-resolution level, over the metadata's ``pixel_size_um_estimated``
        (and the TIFF's own).
    spot_diameter_um
        Spot diameter in µm, over the metadata's ``spot_diameter``. Where the metadata have none: 55 µm for Visium,
        else the ``inter_spot_dist`` (the side of the square pseudo-spots into which HEST pools Xenium transcripts),
        with a warning; an error if neither applies.
    layer
        Read the counts from ``layers[layer]`` of the h5ad instead of ``X``.
    chunks
        Side (pixels) of the dask chunks of the slide (see :func:`sthinge.io.read_slide`).

    Returns
    -------
    A new SpatialData, with ``S`` = ``section`` (its own coordinate system, level-0 slide pixels):

    - ``images[f"{S}_image"]``: the slide, lazy and multiscale (the TIFF's own pyramid levels), RGB uint8;
    - ``shapes[f"{S}_spots"]``: circles at the spot centres, radius ``spot_diameter_um / 2 / mpp`` pixels;
    - ``tables["table"]``: integer counts (CSR, ``X``) of the spots, annotating the circles (``region`` /
      ``spot_id``), with ``obs["section"]``, ``obs["patient"]``, the h5ad's own obs columns (``in_tissue``,
      ``array_row``, ...), ``obs["array_x"]`` / ``obs["array_y"]`` (from HEST's ``array_col`` / ``array_row``,
      left out where the h5ad has none), ``obsm["spatial"]`` (pixels, x then y) and
      ``uns["sthinge_sections"][S]`` = ``{"mpp", "spot_diameter_um", "image", "shapes", "hest_sample_id",
      "hest"}``, where ``"hest"`` is the metadata JSON as read;

    and ``attrs["sthinge_slides"][f"{S}_image"]`` as :func:`sthinge.io.read_slide` writes it (``"mpp_source"``:
    ``"hest metadata"``, ``"argument"`` or ``"metadata"``, the TIFF's), where :func:`sthinge.pp.make_grid` finds the
    pixel size. Obs names are ``f"{S}_{barcode}"``; genes with the same symbol are summed.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist or holds no HEST sample; ``sample_id`` is not one of its samples (the message lists
        them); the sample's slide or metadata file is missing.
    ValueError
        ``path`` holds several samples and no ``sample_id`` is given (the message lists them); no pixel size is
        known (neither ``mpp``, nor ``pixel_size_um_estimated``, nor one in the TIFF); no spot size is known; the
        counts are not whole numbers >= 0; the positions are missing or not finite; the slide cannot be read; or
        an argument is out of range.
    TypeError
        An argument has the wrong type.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.io.read_hest("hest_data", sample_id="TENX95")  # doctest: +SKIP
    >>> sdata.tables["table"].uns["sthinge_sections"]["TENX95"]["hest"]["organ"]  # doctest: +SKIP
    'Breast'
    >>> st.pp.normalize(sdata)  # doctest: +SKIP
    >>> st.pp.select_genes(sdata, vocab="cellfm-80m")  # doctest: +SKIP
    >>> st.pp.embed_histology(sdata, encoder="he-stats")  # doctest: +SKIP
    """
    from sthinge.io._slide import _check_name

    # every argument is checked before any file is read
    sample_id = _check_text("sample_id", sample_id)
    if section is not None:
        section = _check_name("section", section)
    patient = _check_text("patient", patient)
    if mpp is not None:
        mpp = _check_float("mpp", mpp, low=0.0, low_open=True)
    if spot_diameter_um is not None:
        spot_diameter_um = _check_float("spot_diameter_um", spot_diameter_um, low=0.0, low_open=True)
    layer = _check_text("layer", layer)
    if chunks is not None:
        chunks = _check_int("chunks", chunks, low=1)

    root, sample_id = _locate(path, sample_id)
    if section is None:
        name = "".join(c if c.isalnum() or c in "_-." else "_" for c in sample_id).lstrip("_.") or "hest"
        section = _check_name("section", name)
    st_file = root / _ST / f"{sample_id}.h5ad"
    wsi_file = _wsi_file(root, sample_id)
    meta_file, meta = _read_metadata(root, sample_id)

    # the pixel size: `mpp`, else the metadata's, else the TIFF's own
    meta_mpp = _meta_length(meta, _MPP_KEY, meta_file)
    tiff_mpp, tiff_where, readable = _slide_mpp(wsi_file)
    if mpp is not None:
        value, source = mpp, "argument"
    elif meta_mpp is not None:
        value, source = meta_mpp, "metadata"
        if tiff_mpp is not None and abs(meta_mpp - tiff_mpp) > _MPP_RTOL * meta_mpp:
            logg.warning(
                f"read_hest: {_MPP_KEY!r} = {meta_mpp:g} µm per pixel in {str(meta_file)!r} differs from the "
                f"{tiff_mpp:g} in {tiff_where} of {str(wsi_file)!r}; using the metadata's, which HEST's own "
                "reader uses (pass `mpp=` to choose)."
            )
    elif tiff_mpp is not None:
        value, source = tiff_mpp, "slide"
        logg.info(
            f"read_hest: {str(meta_file)!r} has no {_MPP_KEY!r}; using the {tiff_mpp:g} µm per pixel of the TIFF."
        )
    elif readable:
        raise ValueError(
            f"No pixel size for HEST sample {sample_id!r}: {str(meta_file)!r} has no {_MPP_KEY!r} and the slide "
            f"{str(wsi_file)!r} has none in its own metadata; pass `mpp=` (micrometres per pixel of its "
            "full-resolution level)."
        )
    else:
        value, source = None, None  # an unreadable slide: read_slide raises, naming it

    if spot_diameter_um is not None:
        diameter = spot_diameter_um
    else:
        diameter, _ = _spot_diameter(meta, meta_file, sample_id)

    # the spots
    import anndata as ad

    try:
        adata = ad.read_h5ad(st_file)
    except Exception as err:
        raise ValueError(f"{str(st_file)!r} cannot be read as an h5ad file ({type(err).__name__}: {err}).") from err
    if layer is not None and layer not in adata.layers:
        raise ValueError(f"`layer` {layer!r} is not a layer of {str(st_file)!r}; its layers: {list(adata.layers)}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"{str(st_file)!r} holds no counts ({adata.n_obs} spots x {adata.n_vars} genes).")
    counts = _counts(adata, layer, st_file)
    xy = _spot_xy(adata, st_file)
    barcodes = [str(b) for b in adata.obs_names]
    if len(set(barcodes)) < len(barcodes):
        raise ValueError(f"The spot barcodes (obs_names) of {str(st_file)!r} are not unique.")
    genes = [str(g) for g in adata.var_names]
    n_repeated = len(genes) - len(set(genes))
    if n_repeated:
        logg.warning(f"read_hest: {n_repeated} gene symbol(s) of {str(st_file)!r} repeat; their counts are summed.")
    grid = _array_xy(adata.obs)
    obs_extra = _obs_extra(adata.obs)
    if patient is None:
        given = meta.get("patient")
        patient = sample_id if _missing(given) else str(given)

    # the slide (lazy)
    from sthinge.io._slide import SLIDES_KEY, read_slide

    image_key = f"{section}{K.IMAGE_SUFFIX}"
    # the metadata's pixel size against the TIFF's was warned about above; `mpp=` against it, read_slide says
    with _quiet_mpp_warning() if source == "metadata" else contextlib.nullcontext():
        slide = read_slide(wsi_file, mpp=value, image_key=image_key, coordinate_system=section, chunks=chunks)
    tree = slide.images[image_key]
    record = dict(slide.attrs[SLIDES_KEY][image_key])
    if source is not None:
        record["mpp_source"] = {"argument": "argument", "metadata": "hest metadata", "slide": "metadata"}[source]
    value = record["mpp"]
    height, width = tree["scale0"]["image"].shape[1:]
    outside = int(((xy[:, 0] < 0) | (xy[:, 0] > width) | (xy[:, 1] < 0) | (xy[:, 1] > height)).sum())
    if outside:
        logg.warning(
            f"read_hest: {outside} of {len(xy)} spot centre(s) of {str(st_file)!r} lie outside the {width} x {height} "
            f"px slide {str(wsi_file)!r}: the positions may not be in pixels of its full-resolution level."
        )

    from sthinge.datasets._common import SectionData, build_spatialdata

    grid_xy = grid if grid is not None else np.zeros((len(barcodes), 2), dtype=int)
    # name, patient, counts, genes, barcodes, array_xy, pixel_xy, mpp, spot_diameter_um (SectionData's order)
    data = SectionData(section, patient, counts, genes, barcodes, grid_xy, xy, value, diameter)
    data.obs_extra, data.image_element = obs_extra, tree
    sdata = build_spatialdata([data])
    table = sdata.tables[K.TABLE_KEY]
    if grid is None:  # no grid indices: leave them out (tl.evaluate then infers the grid from the positions)
        table.obs = table.obs.drop(columns=[K.ARRAY_X, K.ARRAY_Y])
    info = table.uns[K.UNS_SECTIONS][section]
    info["hest_sample_id"] = sample_id
    info["hest"] = json.loads(json.dumps(meta))  # a copy of the JSON as read
    sdata.attrs[SLIDES_KEY] = {image_key: record}
    logg.info(
        f"read_hest: sample {sample_id!r} as section {section!r}: {table.n_obs} spots x {table.n_vars} genes, "
        f"{value:g} µm/px, spots of {diameter:g} µm."
    )
    return sdata
