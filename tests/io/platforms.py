"""Writers of tiny but format-faithful output folders of three 10x Genomics platforms, for the tests.

* :func:`write_spaceranger`: a Space Ranger (Visium, 55 µm spots) ``outs/`` folder, read by ``spatialdata_io.visium``;
* :func:`write_visium_hd`: a Space Ranger 3.x Visium HD ``outs/`` folder, read by ``spatialdata_io.visium_hd``;
* :func:`write_xenium`: a Xenium Onboard Analysis (XOA 2.0) output folder with a post-Xenium H&E image and its
  alignment, read by ``spatialdata_io.xenium``.

No real sample can be downloaded in the tests, so these folders mirror the layouts that the readers and the 10x
documentation define: file names, HDF5 groups and attributes, column names and order, JSON keys. Everything is small
(images under ~1000 px a side, a few thousand bins or cells at most) and each writer runs in well under 2 s.

Each writer returns a dataclass with the ground truth: positions, counts, genes, and the places of bright pure-green
``(0, 255, 0)`` square markers painted into the H&E-like images (pink tissue, ``(232, 166, 204)`` with noise, on a
near-white ``(243, 241, 245)`` background) under known spots / bins / cells.

Conventions shared by the three writers:

* images are ``uint8`` RGB; pixel ``(row i, column j)`` covers ``[j, j + 1) x [i, i + 1)`` in pixel coordinates, so
  its centre is at ``(j + 0.5, i + 0.5)`` (spatialdata's convention); a point ``(x, y)`` lies in pixel
  ``(floor(y), floor(x))``;
* positions are ``(x, y)`` pairs (x to the right, y down), in pixels of the named image or in µm;
* counts are integer ``(n_observations, n_genes)`` arrays in the order of the returned barcodes / cell ids, which is
  the order of the written matrices (10x sorts barcodes); genes in the order of :data:`GENES`; every barcode or cell
  has a total count > 0. Counts are Poisson with a rate (returned as ``rates``) that depends smoothly on the x position
  (each gene its own sinusoid of x), so genes vary across the tissue.

What the readers (spatialdata-io 0.7) need, and their quirks:

* ``visium``: the counts file is Space Ranger's unprefixed ``filtered_feature_bc_matrix.h5``, from which the reader
  cannot infer a library id, so ``dataset_id=`` must be passed; ``fullres_image_file`` is taken relative to ``root``.
* ``visium_hd``: ``fullres_image_file`` is used as given (not joined to ``root``): pass an absolute path (without it,
  the reader finds ``{dataset_id}_tissue_image.tif`` by itself). Of ``{dataset_id}_feature_slice.h5`` it reads only the
  ``metadata_json`` attribute (``hd_layout_json`` -> ``file_format``; ``transform_matrices`` only for a CytAssist
  image), so only that attribute is written; its other keys are illustrative.
* ``xenium``: opens ``cells.zarr.zip`` whatever is asked (even with no labels) and needs ``cells.parquet`` and
  ``cell_feature_matrix.h5`` for the table (forced on by ``cells_as_circles``); boundaries, transcripts and morphology
  images are not written, so those options must be off. No configuration failed on these folders.

Import it from a test next to it with ``from platforms import write_spaceranger, ...``.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tifffile
from PIL import Image
from scipy import sparse

__all__ = [
    "BACKGROUND_RGB",
    "GENES",
    "GENE_IDS",
    "GREEN",
    "TISSUE_RGB",
    "HDBins",
    "SpaceRangerTruth",
    "VisiumHDTruth",
    "XeniumTruth",
    "is_green",
    "write_spaceranger",
    "write_visium_hd",
    "write_xenium",
]

GENES: tuple[str, ...] = tuple(
    (
        "ACTB GAPDH ERBB2 KRT8 KRT18 KRT19 EPCAM VIM CD74 MKI67 ESR1 PGR TFF1 COL1A1 COL1A2 COL3A1 FN1 SPARC PTPRC "
        "CD3E MS4A1 LYZ B2M MALAT1 TMSB4X EEF1A1 FTL FTH1 MGP DCN"
    ).split()
)
# Ensembl (GRCh38) gene ids of GENES, written as the features' ``id`` like Space Ranger / XOA do
GENE_IDS: dict[str, str] = {
    "ACTB": "ENSG00000075624",
    "GAPDH": "ENSG00000111640",
    "ERBB2": "ENSG00000141736",
    "KRT8": "ENSG00000170421",
    "KRT18": "ENSG00000111057",
    "KRT19": "ENSG00000171345",
    "EPCAM": "ENSG00000119888",
    "VIM": "ENSG00000026025",
    "CD74": "ENSG00000019582",
    "MKI67": "ENSG00000148773",
    "ESR1": "ENSG00000091831",
    "PGR": "ENSG00000082175",
    "TFF1": "ENSG00000160182",
    "COL1A1": "ENSG00000108821",
    "COL1A2": "ENSG00000164692",
    "COL3A1": "ENSG00000168542",
    "FN1": "ENSG00000115414",
    "SPARC": "ENSG00000113140",
    "PTPRC": "ENSG00000081237",
    "CD3E": "ENSG00000198851",
    "MS4A1": "ENSG00000156738",
    "LYZ": "ENSG00000090382",
    "B2M": "ENSG00000166710",
    "MALAT1": "ENSG00000251562",
    "TMSB4X": "ENSG00000205542",
    "EEF1A1": "ENSG00000156508",
    "FTL": "ENSG00000087086",
    "FTH1": "ENSG00000167996",
    "MGP": "ENSG00000111341",
    "DCN": "ENSG00000011465",
}

GREEN = (0, 255, 0)
TISSUE_RGB = (232, 166, 204)
BACKGROUND_RGB = (243, 241, 245)
NUCLEUS_RGB = (112, 64, 150)  # haematoxylin-like dots (Xenium H&E only)

XENIUM_PIXEL_SIZE = 0.2125  # µm per pixel of the Xenium morphology images (and of the masks of cells.zarr.zip)
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_SPOT_PITCH_UM = 100.0  # centre to centre, neighbours in one row are 2 array columns apart
VISIUM_FIDUCIAL_DIAMETER_UM = 89.0  # about 1.6 spot diameters, as in Space Ranger's scalefactors
HD_FIDUCIAL_DIAMETER_UM = 330.0  # Space Ranger writes one for HD too; no reader uses it


def is_green(rgb) -> bool:
    """Whether an RGB pixel (any numeric type, 0-255) is one of the bright pure-green markers."""
    r, g, b = (float(v) for v in np.asarray(rgb).ravel()[:3])
    return g > 200 and r < 60 and b < 60


# ---------------------------------------------------------------------------------------------------------------------
# ground truth


@dataclass(eq=False)
class SpaceRangerTruth:
    """What :func:`write_spaceranger` wrote.

    Attributes
    ----------
    root
        The Space Ranger ``outs/``-like folder.
    dataset_id
        The id to pass to the reader (the elements are named after it).
    fullres_image_file
        The full-resolution image's file name, relative to ``root`` (``fullres_image_file=`` of the reader).
    fullres_image_path
        The same, absolute.
    mpp
        µm per pixel of the full-resolution image; µm positions are ``pixels * mpp`` from its top-left corner.
    image_shape
        ``(height, width)`` of the full-resolution image (pixels).
    scalefactors
        The content of ``spatial/scalefactors_json.json``.
    barcodes
        ``(n,)`` the in-tissue spots, i.e. the filtered matrix's barcodes, sorted (the matrix order).
    array_row, array_col
        ``(n,)`` their hexagonal Visium array indices (``array_row + array_col`` is even).
    spots_px
        ``(n, 2)`` spot centres ``(x, y)`` = ``(pxl_col_in_fullres, pxl_row_in_fullres)`` in full-resolution pixels
        (integers, as Space Ranger writes them).
    spots_um
        ``(n, 2)`` the same in µm.
    genes
        The genes (matrix columns; :data:`GENES`).
    counts
        ``(n, n_genes)`` int32 counts of the filtered matrix.
    rates
        ``(n, n_genes)`` the Poisson rates the counts were drawn from.
    marker_spots
        ``(k,)`` indices (into ``barcodes``) of the spots with a green square centred on them.
    marker_um, marker_px
        ``(k, 2)`` centres of the squares in µm / full-resolution pixels (the centres of those spots).
    marker_size_um
        The side of the squares (µm).
    n_spots_total
        Number of spots listed in ``tissue_positions.csv`` (in and out of the tissue).
    """

    root: Path
    dataset_id: str
    fullres_image_file: str
    fullres_image_path: Path
    mpp: float
    image_shape: tuple[int, int]
    scalefactors: dict
    barcodes: np.ndarray
    array_row: np.ndarray
    array_col: np.ndarray
    spots_px: np.ndarray
    spots_um: np.ndarray
    genes: tuple[str, ...]
    counts: np.ndarray
    rates: np.ndarray
    marker_spots: np.ndarray
    marker_um: np.ndarray
    marker_px: np.ndarray
    marker_size_um: float
    n_spots_total: int


@dataclass(eq=False)
class HDBins:
    """The in-tissue bins of one Visium HD bin size (those of its ``filtered_feature_bc_matrix.h5``).

    Attributes
    ----------
    size_um
        The bin size (µm).
    name
        The folder / table name, e.g. ``"square_008um"``.
    barcodes
        ``(n,)`` ``s_008um_{array_row:05d}_{array_col:05d}-1``, sorted (the matrix order).
    array_row, array_col
        ``(n,)`` the bin's grid indices at its own size.
    centres_px
        ``(n, 2)`` bin centres ``(x, y)`` in full-resolution pixels: ``origin_px + ((col + 0.5), (row + 0.5)) *
        size_um / mpp``.
    centres_um
        ``(n, 2)`` the same in µm (``centres_px * mpp``).
    counts
        ``(n, n_genes)`` int32; a bin's counts are the sums of the counts of the finest bins inside it.
    n_total
        Number of bins of that size in ``tissue_positions.parquet`` (in and out of the tissue).
    """

    size_um: int
    name: str
    barcodes: np.ndarray
    array_row: np.ndarray
    array_col: np.ndarray
    centres_px: np.ndarray
    centres_um: np.ndarray
    counts: np.ndarray
    n_total: int


@dataclass(eq=False)
class VisiumHDTruth:
    """What :func:`write_visium_hd` wrote.

    Attributes
    ----------
    root
        The Space Ranger ``outs/``-like folder.
    dataset_id
        The prefix of ``{dataset_id}_feature_slice.h5`` and of the full-resolution image; the elements' names.
    fullres_image_path
        Absolute path of the full-resolution (microscope) image, ``{root}/{dataset_id}_tissue_image.tif``: pass it
        (absolute) as ``fullres_image_file=`` (the HD reader does not join it to ``root``); the reader also finds it
        alone.
    mpp
        µm per full-resolution pixel (``microns_per_pixel``); µm positions are ``pixels * mpp``.
    image_shape
        ``(height, width)`` of the full-resolution image.
    origin_px
        ``(x, y)`` full-resolution pixel position of the top-left corner of bin (0, 0) (of every size).
    genes
        :data:`GENES`.
    bins
        ``{size_um: HDBins}`` for each written bin size.
    finest
        The smallest bin size: the counts were drawn for its bins, the larger ones are sums.
    rates
        ``(n_finest, n_genes)`` Poisson rates of the finest bins (order of ``bins[finest].barcodes``).
    marker_um, marker_px
        ``(k, 2)`` centres of the green squares (the centres of some finest bins) in µm / full-resolution pixels.
    marker_size_um
        Side of the squares (µm).
    marker_bins
        ``{size_um: (k,) indices}``: for each size, the bin (index into ``bins[size].barcodes``) under each marker.
    scalefactors
        ``{size_um: the bin's spatial/scalefactors_json.json}``.
    """

    root: Path
    dataset_id: str
    fullres_image_path: Path
    mpp: float
    image_shape: tuple[int, int]
    origin_px: tuple[float, float]
    genes: tuple[str, ...]
    bins: dict[int, HDBins]
    finest: int
    rates: np.ndarray
    marker_um: np.ndarray
    marker_px: np.ndarray
    marker_size_um: float
    marker_bins: dict[int, np.ndarray]
    scalefactors: dict[int, dict]


@dataclass(eq=False)
class XeniumTruth:
    """What :func:`write_xenium` wrote.

    Attributes
    ----------
    root
        The Xenium output folder.
    pixel_size
        µm per morphology pixel (0.2125); the reader's ``global`` coordinate system is in morphology pixels.
    cell_ids
        ``(n,)`` Xenium cell ids (``aaaaficg-1``), sorted, in the order of ``cells.parquet`` and of the matrix.
    cells_um
        ``(n, 2)`` cell centroids ``(x_centroid, y_centroid)`` in µm.
    cell_area_um2, nucleus_area_um2
        ``(n,)`` areas (µm²) of the cell and nucleus masks of ``cells.zarr.zip`` (the reader's circles have radius
        ``sqrt(cell_area / pi)``).
    genes
        :data:`GENES` (the "Gene Expression" features).
    counts
        ``(n, n_genes)`` int32 gene counts.
    rates
        ``(n, n_genes)`` their Poisson rates.
    control_features
        Names of the control features of the matrix (negative control probes / codewords, unassigned codewords),
        dropped by the reader's ``gex_only=True``.
    control_counts
        ``(n, n_controls)`` their counts.
    he_image_file, alignment_file
        File names (in ``root``) of the H&E image and of its alignment CSV.
    he_mpp
        µm per pixel of the H&E image.
    he_shape
        ``(height, width)`` of the H&E image (level 0).
    rotation_deg, translation_um
        The H&E frame: a H&E pixel position ``q = (x, y)`` is at ``R(rotation) @ (he_mpp * q) + translation_um`` µm.
    alignment
        ``(3, 3)`` the matrix of the alignment CSV: H&E pixels -> morphology pixels (µm / ``pixel_size``).
    marker_cells
        ``(k,)`` indices of the cells whose centroids carry a green square (side ``marker_size_um`` in µm, drawn in
        the µm frame, hence rotated in the H&E image).
    marker_um
        ``(k, 2)`` the squares' centres (µm), i.e. those cells' centroids.
    marker_he_px
        ``(k, 2)`` the same in H&E pixels.
    marker_size_um
        Side of the squares.
    cells_near_marker
        ``k`` arrays of the indices of the cells within 10 µm of each marker (centroid distance).
    morphology_shape
        ``(height, width)`` of the masks of ``cells.zarr.zip`` (morphology pixels).
    """

    root: Path
    pixel_size: float
    cell_ids: np.ndarray
    cells_um: np.ndarray
    cell_area_um2: np.ndarray
    nucleus_area_um2: np.ndarray
    genes: tuple[str, ...]
    counts: np.ndarray
    rates: np.ndarray
    control_features: tuple[str, ...]
    control_counts: np.ndarray
    he_image_file: str
    alignment_file: str
    he_mpp: float
    he_shape: tuple[int, int]
    rotation_deg: float
    translation_um: tuple[float, float]
    alignment: np.ndarray
    marker_cells: np.ndarray
    marker_um: np.ndarray
    marker_he_px: np.ndarray
    marker_size_um: float
    cells_near_marker: list[np.ndarray] = field(default_factory=list)
    morphology_shape: tuple[int, int] = (0, 0)


# ---------------------------------------------------------------------------------------------------------------------
# shared pieces

# per-gene expression programme, fixed for all writers and seeds: a relative level and a sinusoid of x
_PROGRAMME = np.random.default_rng(20240611)
_GENE_LEVEL = np.exp(_PROGRAMME.normal(0.0, 0.8, len(GENES)))
_GENE_LEVEL /= _GENE_LEVEL.sum()
_GENE_FREQ = _PROGRAMME.uniform(0.5, 1.5, len(GENES))  # cycles across the tissue's x extent
_GENE_PHASE = _PROGRAMME.uniform(0.0, 2 * np.pi, len(GENES))
_BESSEL_I0_1 = 1.2660658777520082  # mean of exp(sin(u)) over a period: keeps the mean depth


def _rates(x_um: np.ndarray, x_range: tuple[float, float], depth: float) -> np.ndarray:
    """``(n, n_genes)`` Poisson rates: mean total ``depth``; gene g's rate is ``exp(sin)`` of x, its own period."""
    t = (np.asarray(x_um, float) - x_range[0]) / (x_range[1] - x_range[0])
    mod = np.exp(np.sin(2 * np.pi * _GENE_FREQ * t[:, None] + _GENE_PHASE)) / _BESSEL_I0_1
    return depth * _GENE_LEVEL * mod


def _draw_counts(rates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson counts (int32), every row with a total > 0 (an empty row gets one count of its likeliest gene)."""
    counts = rng.poisson(rates).astype(np.int32)
    empty = np.flatnonzero(counts.sum(1) == 0)
    counts[empty, np.argmax(rates[empty], axis=1)] = 1
    return counts


def _h5_strings(values) -> np.ndarray:
    """Fixed-length byte strings, the way 10x writes its HDF5 string datasets and attributes."""
    values = [str(v).encode() for v in values]
    width = max([len(v) for v in values] + [1])
    return np.array(values, dtype=f"S{width}")


def _write_10x_h5(
    path: Path,
    barcodes,
    counts: np.ndarray,
    *,
    ids,
    names,
    feature_types,
    genome: str,
    attrs: dict,
) -> None:
    """A 10x feature-barcode matrix HDF5 (Cell Ranger >= 3 layout).

    ``matrix/`` holds the features x barcodes matrix in CSC form (``data`` int32, ``indices`` int64 = feature
    indices, ``indptr`` int64 over barcodes, ``shape`` int32 ``[n_features, n_barcodes]``), ``barcodes`` and
    ``features/{_all_tag_keys, feature_type, genome, id, name}``; the file's attributes are 10x's (``filetype``,
    ``version``, ``library_ids``, ...).
    """
    csr = sparse.csr_matrix(np.asarray(counts, dtype=np.int32))  # rows = barcodes: the CSC of the transpose
    csr.sort_indices()

    def put(group, name, data):
        data = np.asarray(data)
        if data.ndim and data.size:
            group.create_dataset(name, data=data, compression="gzip", compression_opts=4, shuffle=True)
        else:
            group.create_dataset(name, data=data)

    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        m = f.create_group("matrix")
        put(m, "barcodes", _h5_strings(barcodes))
        put(m, "data", csr.data.astype(np.int32))
        put(m, "indices", csr.indices.astype(np.int64))
        put(m, "indptr", csr.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([len(names), len(barcodes)], dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("_all_tag_keys", data=_h5_strings(["genome"]))
        put(feats, "feature_type", _h5_strings(feature_types))
        put(feats, "genome", _h5_strings([genome] * len(names)))
        put(feats, "id", _h5_strings(ids))
        put(feats, "name", _h5_strings(names))


def _spaceranger_h5_attrs(library_id: str, chemistry: str, software: str) -> dict:
    return {
        "chemistry_description": np.bytes_(chemistry),
        "filetype": np.bytes_("matrix"),
        "library_ids": _h5_strings([library_id]),
        "original_gem_groups": np.array([1], dtype=np.int64),
        "software_version": np.bytes_(software),
        "version": np.int64(2),
    }


def _canvas(tissue: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(h, w, 3)`` uint8 H&E-like image: pink noisy tissue where ``tissue`` is True, near-white elsewhere."""
    base = np.where(tissue[..., None], np.array(TISSUE_RGB, np.float32), np.array(BACKGROUND_RGB, np.float32))
    amp = np.where(tissue, np.float32(7.0), np.float32(1.5))[..., None]
    noise = rng.standard_normal(base.shape, dtype=np.float32) * amp
    return np.clip(np.rint(base + noise), 0, 255).astype(np.uint8)


def _paint_square(img: np.ndarray, cx: float, cy: float, half: float) -> None:
    """Paint GREEN on the pixels whose centres lie within ``half`` pixels of ``(cx, cy)`` along x and y."""
    h, w = img.shape[:2]
    j0, j1 = max(math.ceil(cx - half - 0.5), 0), min(math.floor(cx + half - 0.5), w - 1)
    i0, i1 = max(math.ceil(cy - half - 0.5), 0), min(math.floor(cy + half - 0.5), h - 1)
    img[i0 : i1 + 1, j0 : j1 + 1] = GREEN


def _downscale(img: np.ndarray, scalef: float) -> np.ndarray:
    """Box-filter ``img`` to ``round(size * scalef)`` pixels, as Space Ranger makes its hires / lowres PNGs."""
    h, w = img.shape[:2]
    size = (max(round(w * scalef), 1), max(round(h * scalef), 1))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def _save_png(img: np.ndarray, path: Path) -> None:
    Image.fromarray(img).save(path, compress_level=1)


def _save_tiff(img: np.ndarray, path: Path, mpp: float) -> None:
    """A plain RGB TIFF with its resolution tags (pixels per cm), like a microscope's export."""
    tifffile.imwrite(
        path,
        img,
        photometric="rgb",
        compression="zlib",
        resolution=(1e4 / mpp, 1e4 / mpp),
        resolutionunit="CENTIMETER",
    )


def _visium_barcodes(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct random 16-nt spot barcodes with the ``-1`` GEM-group suffix."""
    out: set[str] = set()
    letters = np.array(list("ACGT"))
    while len(out) < n:
        for row in rng.integers(0, 4, (n - len(out), 16)):
            out.add("".join(letters[row]) + "-1")
    return np.array(sorted(out))


def _scalefactor(shape: tuple[int, int], longest_px: int) -> float:
    """The scale factor that brings the longest side of an image of ``shape`` to ``longest_px`` (float32 precision,
    as Space Ranger writes it)."""
    return float(str(np.float32(longest_px / max(shape))))


def _pick_spread(candidates: np.ndarray, xy: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` indices among ``candidates``, spread out (greedy farthest point from a random start)."""
    chosen = [int(rng.choice(candidates))]
    while len(chosen) < min(k, len(candidates)):
        d = np.min(np.linalg.norm(xy[candidates, None, :] - xy[None, chosen, :], axis=-1), axis=1)
        chosen.append(int(candidates[np.argmax(d)]))
    return np.array(chosen, dtype=int)


# ---------------------------------------------------------------------------------------------------------------------
# 1. Space Ranger (Visium)


def write_spaceranger(
    root: str | Path,
    *,
    dataset_id: str = "V1",
    mpp: float = 1.0,
    n_rows: int = 8,
    n_cols: int = 18,
    margin_um: float = 75.0,
    depth: float = 200.0,
    n_markers: int = 3,
    marker_size_um: float = 16.0,
    hires_px: int = 600,
    lowres_px: int = 200,
    seed: int = 0,
) -> SpaceRangerTruth:
    """Write a Space Ranger (Visium v1, 2.x layout) ``outs/`` folder into ``root``.

    Read it with ``spatialdata_io.visium(root, dataset_id=truth.dataset_id,
    fullres_image_file=truth.fullres_image_file)``.

    Files (the names Space Ranger uses in ``outs/``)::

        filtered_feature_bc_matrix.h5     in-tissue spots x genes (10x HDF5, attributes library_ids=[dataset_id], ...)
        raw_feature_bc_matrix.h5          every spot of tissue_positions.csv (zero counts off the tissue)
        spatial/tissue_positions.csv      Space Ranger 2 layout: header barcode,in_tissue,array_row,array_col,
                                          pxl_row_in_fullres,pxl_col_in_fullres; every spot of the array window
        spatial/scalefactors_json.json    spot_diameter_fullres, tissue_hires_scalef, fiducial_diameter_fullres,
                                          tissue_lowres_scalef
        spatial/tissue_hires_image.png    box-filtered full-res image, longest side ``hires_px`` (Space Ranger: 2000)
        spatial/tissue_lowres_image.png   likewise, longest side ``lowres_px`` (Space Ranger: 600)
        {dataset_id}_image.tif            the full-resolution H&E image (the user's input to Space Ranger)

    Geometry: a window of ``n_rows`` x ``n_cols`` of the Visium array (array indices from 0, a spot where
    ``array_row + array_col`` is even); spot centres at ``x = margin + 50 µm * array_col``, ``y = margin + 86.6 µm *
    array_row`` (100 µm centre to centre, hexagonal), rounded to whole full-resolution pixels. A spot is in the tissue
    when its centre lies in the pink tissue ellipse of the image. One green square of side ``marker_size_um`` is
    centred on each of ``n_markers`` in-tissue spots.

    Returns
    -------
    :class:`SpaceRangerTruth`: dataset_id, full-res image file, mpp, the in-tissue spots (barcodes, array indices,
    centres in pixels and µm), genes, counts (and rates), the marker spots and positions.
    """
    root = Path(root)
    (root / "spatial").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    half_pitch = VISIUM_SPOT_PITCH_UM / 2
    row_pitch = VISIUM_SPOT_PITCH_UM * math.sqrt(3) / 2

    # the array window and the spots' positions
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep], cols[keep]
    xy_px = np.rint(np.c_[margin_um + cols * half_pitch, margin_um + rows * row_pitch] / mpp).astype(np.int64)
    width_um = 2 * margin_um + (n_cols - 1) * half_pitch
    height_um = 2 * margin_um + (n_rows - 1) * row_pitch
    h, w = math.ceil(height_um / mpp), math.ceil(width_um / mpp)

    # tissue: an ellipse a bit smaller than the array, so that some spots are off the tissue
    cx, cy, ax, ay = width_um / 2, height_um / 2, 0.40 * width_um, 0.42 * height_um

    def in_tissue(x_um, y_um):
        return ((x_um - cx) / ax) ** 2 + ((y_um - cy) / ay) ** 2 <= 1.0

    x_um_px = (np.arange(w) + 0.5) * mpp
    y_um_px = (np.arange(h) + 0.5) * mpp
    img = _canvas(in_tissue(x_um_px[None, :], y_um_px[:, None]), rng)
    # a spot is in the tissue when the pixel under its centre is
    tissue_spot = in_tissue((xy_px[:, 0] + 0.5) * mpp, (xy_px[:, 1] + 0.5) * mpp)

    barcodes_all = _visium_barcodes(len(rows), rng)  # sorted; spot k gets the k-th (random order below)
    order = rng.permutation(len(rows))
    rows, cols, xy_px, tissue_spot = rows[order], cols[order], xy_px[order], tissue_spot[order]

    positions = pd.DataFrame(
        {
            "barcode": barcodes_all,
            "in_tissue": tissue_spot.astype(int),
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": xy_px[:, 1],
            "pxl_col_in_fullres": xy_px[:, 0],
        }
    )
    positions.to_csv(root / "spatial" / "tissue_positions.csv", index=False)

    # counts (only spots under tissue have RNA)
    sel = np.flatnonzero(tissue_spot)
    spots_um = xy_px[sel].astype(float) * mpp
    rates = _rates(spots_um[:, 0], (0.0, width_um), depth)
    counts = _draw_counts(rates, rng)
    ids = [GENE_IDS[g] for g in GENES]
    feats = {"ids": ids, "names": GENES, "feature_types": ["Gene Expression"] * len(GENES), "genome": "GRCh38"}
    attrs = _spaceranger_h5_attrs(dataset_id, "Spatial 3' v1", "spaceranger-2.1.1")
    _write_10x_h5(root / "filtered_feature_bc_matrix.h5", barcodes_all[sel], counts, **feats, attrs=attrs)
    raw = np.zeros((len(barcodes_all), len(GENES)), np.int32)
    raw[sel] = counts
    _write_10x_h5(root / "raw_feature_bc_matrix.h5", barcodes_all, raw, **feats, attrs=attrs)

    # markers: green squares centred on some in-tissue spots (away from each other)
    marker_spots = np.sort(_pick_spread(np.arange(len(sel)), spots_um, n_markers, rng))
    marker_px = xy_px[sel][marker_spots].astype(float)
    for x, y in marker_px:
        _paint_square(img, x, y, marker_size_um / mpp / 2)

    # images
    fullres_name = f"{dataset_id}_image.tif"
    _save_tiff(img, root / fullres_name, mpp)
    hires_scalef, lowres_scalef = _scalefactor((h, w), hires_px), _scalefactor((h, w), lowres_px)
    _save_png(_downscale(img, hires_scalef), root / "spatial" / "tissue_hires_image.png")
    _save_png(_downscale(img, lowres_scalef), root / "spatial" / "tissue_lowres_image.png")
    scalefactors = {
        "spot_diameter_fullres": VISIUM_SPOT_DIAMETER_UM / mpp,
        "tissue_hires_scalef": hires_scalef,
        "fiducial_diameter_fullres": VISIUM_FIDUCIAL_DIAMETER_UM / mpp,
        "tissue_lowres_scalef": lowres_scalef,
    }
    (root / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))

    return SpaceRangerTruth(
        root=root,
        dataset_id=dataset_id,
        fullres_image_file=fullres_name,
        fullres_image_path=(root / fullres_name).resolve(),
        mpp=mpp,
        image_shape=(h, w),
        scalefactors=scalefactors,
        barcodes=barcodes_all[sel],
        array_row=rows[sel],
        array_col=cols[sel],
        spots_px=xy_px[sel].astype(float),
        spots_um=spots_um,
        genes=GENES,
        counts=counts,
        rates=rates,
        marker_spots=marker_spots,
        marker_um=marker_px * mpp,
        marker_px=marker_px,
        marker_size_um=marker_size_um,
        n_spots_total=len(barcodes_all),
    )


# ---------------------------------------------------------------------------------------------------------------------
# 2. Visium HD


def write_visium_hd(
    root: str | Path,
    *,
    dataset_id: str = "HD1",
    mpp: float = 0.5,
    bin_sizes=(8, 16),
    width_um: float = 384.0,
    height_um: float = 320.0,
    margin_um: float = 32.0,
    depth_8um: float = 40.0,
    n_markers: int = 3,
    marker_size_um: float = 6.0,
    hires_px: int = 600,
    lowres_px: int = 200,
    seed: int = 0,
) -> VisiumHDTruth:
    """Write a Space Ranger 3.x Visium HD ``outs/`` folder into ``root``.

    Read it with ``spatialdata_io.visium_hd(root, dataset_id=truth.dataset_id, load_segmentations_only=False,
    fullres_image_file=truth.fullres_image_path)`` (the HD reader uses ``fullres_image_file`` as given, not relative
    to ``root``: pass the absolute path; it also finds ``{dataset_id}_tissue_image.tif`` by itself).

    Files::

        {dataset_id}_feature_slice.h5      only its ``metadata_json`` attribute (JSON with ``hd_layout_json``, itself
                                           JSON with file_format "1.0", and the 3x3 ``transform_matrices``); the
                                           per-gene 2 µm slices are not written (the reader does not use them)
        {dataset_id}_tissue_image.tif      the full-resolution microscope (H&E) image
        spatial/                           tissue_hires_image.png, tissue_lowres_image.png, scalefactors_json.json
                                           (bin_size_um 2.0, as Space Ranger's outs/spatial)
        binned_outputs/square_XXXum/filtered_feature_bc_matrix.h5   in-tissue bins x genes
        binned_outputs/square_XXXum/raw_feature_bc_matrix.h5        every bin of the grid
        binned_outputs/square_XXXum/spatial/tissue_positions.parquet
            columns barcode, in_tissue, array_row, array_col, pxl_row_in_fullres, pxl_col_in_fullres (every bin)
        binned_outputs/square_XXXum/spatial/scalefactors_json.json
            bin_size_um, microns_per_pixel, spot_diameter_fullres (= bin_size_um / microns_per_pixel),
            tissue_hires_scalef, tissue_lowres_scalef, fiducial_diameter_fullres
        binned_outputs/square_XXXum/spatial/tissue_{hires,lowres}_image.png   copies of outs/spatial's

    Geometry: a ``width_um`` x ``height_um`` window of the capture area (multiples of the largest bin size), axis
    aligned with the image, its top-left corner at ``origin_px = (margin_um / mpp, margin_um / mpp)``. Bin (row r,
    col c) of size s µm covers ``[c s, (c + 1) s) x [r s, (r + 1) s)`` µm of the window, its centre is at
    ``origin_px + ((c + 0.5) s / mpp, (r + 0.5) s / mpp)`` pixels; its barcode is ``s_{s:03d}um_{r:05d}_{c:05d}-1``
    and ``array_row, array_col = r, c`` at its own size. The tissue is an ellipse with a round bite out of it: a
    finest bin is in the tissue when its centre is, a larger bin when any of its finest bins is. Counts are drawn for
    the finest bins (mean total ``depth_8um * (size / 8)**2``) and summed into the larger ones, so the counts of a
    16 µm bin equal the sum of the counts of the 8 µm bins inside it. ``spot_colrow_to_microscope_colrow`` maps the
    2 µm grid (col, row) indices to pixels with the same convention. Green squares of side ``marker_size_um`` sit on
    the centres of ``n_markers`` finest in-tissue bins.

    Returns
    -------
    :class:`VisiumHDTruth`: dataset_id, mpp, per bin size the bins (barcodes, array_row, array_col, centres, counts),
    genes, the markers (µm, pixels) and the bin of each size under each marker.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    sizes = sorted({int(s) for s in bin_sizes})
    finest, largest = sizes[0], sizes[-1]
    if any(s % finest for s in sizes) or any(s not in (2, 8, 16) for s in sizes):
        raise ValueError(f"bin sizes must be among 2, 8 and 16 µm (Space Ranger's), got {bin_sizes}")
    if width_um % largest or height_um % largest:
        raise ValueError(f"the window ({width_um} x {height_um} µm) must be a multiple of {largest} µm")
    n_r, n_c = int(height_um // finest), int(width_um // finest)
    ox = oy = margin_um / mpp
    h, w = math.ceil((height_um + 2 * margin_um) / mpp), math.ceil((width_um + 2 * margin_um) / mpp)

    # tissue (in µm of the window): an ellipse minus a disc bitten out of its upper right
    ex, ey, ax, ay = width_um / 2, height_um / 2, 0.46 * width_um, 0.44 * height_um
    bx, by, br = 0.80 * width_um, 0.18 * height_um, 0.16 * width_um

    def in_tissue(xw, yw):
        return (((xw - ex) / ax) ** 2 + ((yw - ey) / ay) ** 2 <= 1.0) & ((xw - bx) ** 2 + (yw - by) ** 2 > br**2)

    xw = (np.arange(w) + 0.5) * mpp - margin_um
    yw = (np.arange(h) + 0.5) * mpp - margin_um
    img = _canvas(in_tissue(xw[None, :], yw[:, None]), rng)

    # the finest bins, their tissue state and counts on the full grid
    fr, fc = np.meshgrid(np.arange(n_r), np.arange(n_c), indexing="ij")
    fine_tissue = in_tissue((fc + 0.5) * finest, (fr + 0.5) * finest)
    fine_x_um = ox * mpp + (fc + 0.5) * finest
    rates_grid = np.zeros((n_r, n_c, len(GENES)))
    rates_grid[fine_tissue] = _rates(fine_x_um[fine_tissue], (margin_um, margin_um + width_um), depth_8um)
    rates_grid[fine_tissue] *= (finest / 8.0) ** 2
    counts_grid = np.zeros((n_r, n_c, len(GENES)), np.int32)
    counts_grid[fine_tissue] = _draw_counts(rates_grid[fine_tissue], rng)

    ids = [GENE_IDS[g] for g in GENES]
    feats = {"ids": ids, "names": GENES, "feature_types": ["Gene Expression"] * len(GENES), "genome": "GRCh38"}
    attrs = _spaceranger_h5_attrs(dataset_id, "Visium HD v1", "spaceranger-3.0.1")

    # markers on the centres of some finest in-tissue bins
    fine_idx = np.flatnonzero(fine_tissue.ravel())  # row-major == barcode order
    fine_xy_px = np.c_[ox + (fc.ravel() + 0.5) * finest / mpp, oy + (fr.ravel() + 0.5) * finest / mpp]
    # away from the tissue's edge: all 8 neighbours in the tissue too
    pad = np.pad(fine_tissue, 1)
    inner = np.ones_like(fine_tissue)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            inner &= pad[1 + dr : 1 + dr + n_r, 1 + dc : 1 + dc + n_c]
    inner_idx = np.flatnonzero(inner.ravel())
    chosen = np.sort(_pick_spread(inner_idx, fine_xy_px, n_markers, rng))  # flat grid indices
    marker_px = fine_xy_px[chosen]
    for x, y in marker_px:
        _paint_square(img, x, y, marker_size_um / mpp / 2)

    # images
    hires_scalef, lowres_scalef = _scalefactor((h, w), hires_px), _scalefactor((h, w), lowres_px)
    image_path = root / f"{dataset_id}_tissue_image.tif"
    root.mkdir(parents=True, exist_ok=True)
    _save_tiff(img, image_path, mpp)
    spatial = root / "spatial"
    spatial.mkdir(exist_ok=True)
    _save_png(_downscale(img, hires_scalef), spatial / "tissue_hires_image.png")
    _save_png(_downscale(img, lowres_scalef), spatial / "tissue_lowres_image.png")

    def scalefactors_for(size: float) -> dict:
        return {
            "spot_diameter_fullres": size / mpp,
            "bin_size_um": float(size),
            "microns_per_pixel": mpp,
            "tissue_lowres_scalef": lowres_scalef,
            "fiducial_diameter_fullres": HD_FIDUCIAL_DIAMETER_UM / mpp,
            "tissue_hires_scalef": hires_scalef,
        }

    (spatial / "scalefactors_json.json").write_text(json.dumps(scalefactors_for(2.0)))

    # the feature slice's metadata: the 2 µm grid <-> microscope pixels (and a CytAssist frame of 2.5 µm / px)
    p2 = 2.0 / mpp
    spot_to_micro = np.array([[p2, 0.0, ox + p2 / 2], [0.0, p2, oy + p2 / 2], [0.0, 0.0, 1.0]])
    spot_to_cyta = np.array([[0.8, 0.0, 120.0], [0.0, 0.8, 140.0], [0.0, 0.0, 1.0]])
    hd_layout = {
        "file_format": "1.0",
        "slide_uuid": "H1-TEST000",
        "spot_pitch": 2.0,
        "num_rows": int(height_um // 2),
        "num_cols": int(width_um // 2),
        "transform": [2.0, 0.0, 1.0, 0.0, 2.0, 1.0, 0.0, 0.0, 1.0],  # 2 µm grid (col, row) -> µm of the window
    }
    metadata = {
        "sample_id": dataset_id,
        "slide_name": "H1-TEST000",
        "area": "A1",
        "spaceranger_version": "spaceranger-3.0.1",
        "microns_per_pixel": mpp,
        "hd_layout_json": json.dumps(hd_layout),
        "transform_matrices": {
            "spot_colrow_to_microscope_colrow": spot_to_micro.tolist(),
            "microscope_colrow_to_spot_colrow": np.linalg.inv(spot_to_micro).tolist(),
            "spot_colrow_to_cytassist_colrow": spot_to_cyta.tolist(),
            "cytassist_colrow_to_spot_colrow": np.linalg.inv(spot_to_cyta).tolist(),
        },
    }
    with h5py.File(root / f"{dataset_id}_feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps(metadata)

    # the bins of each size
    bins: dict[int, HDBins] = {}
    marker_bins: dict[int, np.ndarray] = {}
    all_scalefactors: dict[int, dict] = {}
    mr, mc = np.divmod(chosen, n_c)  # the markers' finest-bin indices
    for size in sizes:
        k = size // finest
        nr, nc = n_r // k, n_c // k
        tissue = fine_tissue.reshape(nr, k, nc, k).any(axis=(1, 3))
        counts = counts_grid.reshape(nr, k, nc, k, len(GENES)).sum(axis=(1, 3), dtype=np.int32)
        r, c = np.meshgrid(np.arange(nr), np.arange(nc), indexing="ij")
        r, c, tissue, counts = r.ravel(), c.ravel(), tissue.ravel(), counts.reshape(-1, len(GENES))
        barcodes = np.array([f"s_{size:03d}um_{a:05d}_{b:05d}-1" for a, b in zip(r, c)])  # row-major = sorted
        xy = np.c_[ox + (c + 0.5) * size / mpp, oy + (r + 0.5) * size / mpp]
        name = f"square_{size:03d}um"
        folder = root / "binned_outputs" / name
        (folder / "spatial").mkdir(parents=True, exist_ok=True)
        sel = np.flatnonzero(tissue)
        _write_10x_h5(folder / "filtered_feature_bc_matrix.h5", barcodes[sel], counts[sel], **feats, attrs=attrs)
        _write_10x_h5(folder / "raw_feature_bc_matrix.h5", barcodes, counts, **feats, attrs=attrs)
        table = pa.table(
            {
                "barcode": pa.array(barcodes, pa.string()),
                "in_tissue": pa.array(tissue.astype(np.int32)),
                "array_row": pa.array(r.astype(np.int32)),
                "array_col": pa.array(c.astype(np.int32)),
                "pxl_row_in_fullres": pa.array(xy[:, 1]),
                "pxl_col_in_fullres": pa.array(xy[:, 0]),
            }
        )
        pq.write_table(table, folder / "spatial" / "tissue_positions.parquet")
        all_scalefactors[size] = scalefactors_for(size)
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(all_scalefactors[size]))
        for png in ("tissue_hires_image.png", "tissue_lowres_image.png"):
            shutil.copyfile(spatial / png, folder / "spatial" / png)
        bins[size] = HDBins(
            size_um=size,
            name=name,
            barcodes=barcodes[sel],
            array_row=r[sel],
            array_col=c[sel],
            centres_px=xy[sel],
            centres_um=xy[sel] * mpp,
            counts=counts[sel],
            n_total=len(barcodes),
        )
        position = {flat: i for i, flat in enumerate(sel)}
        marker_bins[size] = np.array([position[(a // k) * nc + b // k] for a, b in zip(mr, mc)], dtype=int)

    return VisiumHDTruth(
        root=root,
        dataset_id=dataset_id,
        fullres_image_path=image_path.resolve(),
        mpp=mpp,
        image_shape=(h, w),
        origin_px=(ox, oy),
        genes=GENES,
        bins=bins,
        finest=finest,
        rates=rates_grid.reshape(-1, len(GENES))[fine_idx],
        marker_um=marker_px * mpp,
        marker_px=marker_px,
        marker_size_um=marker_size_um,
        marker_bins=marker_bins,
        scalefactors=all_scalefactors,
    )


# ---------------------------------------------------------------------------------------------------------------------
# 3. Xenium


def _xenium_cell_id(prefix: np.ndarray, suffix: int = 1) -> np.ndarray:
    """XOA's cell id strings: the 8 hex digits of the uint32 prefix shifted to letters ('0' -> 'a', ..., 'f' -> 'p'),
    then ``-{suffix}``."""
    digits = (np.asarray(prefix, np.uint64)[:, None] >> np.arange(28, -1, -4, dtype=np.uint64)) & np.uint64(15)
    letters = np.array(list("abcdefghijklmnop"))
    return np.array(["".join(row) + f"-{suffix}" for row in letters[digits.astype(int)]])


def _rotation(deg: float) -> np.ndarray:
    t = math.radians(deg)
    return np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])


def _zip_folder(folder: Path, target: Path) -> None:
    """Zip a folder's files (stored, not recompressed: the zarr chunks are compressed) into ``target``."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_STORED) as zf:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(folder).as_posix())


def write_xenium(
    root: str | Path,
    *,
    n_cells: int = 300,
    width_um: float = 400.0,
    height_um: float = 320.0,
    he_mpp: float = 0.5,
    rotation_deg: float = 3.0,
    depth: float = 60.0,
    n_markers: int = 3,
    marker_size_um: float = 8.0,
    sample_name: str = "Xenium_V1_test",
    seed: int = 0,
) -> XeniumTruth:
    """Write a Xenium Onboard Analysis (XOA 2.0) output folder, plus a post-Xenium H&E image and its alignment.

    Read it with ``spatialdata_io.xenium(root, cells_boundaries=False, nucleus_boundaries=False, cells_labels=False,
    nucleus_labels=False, transcripts=False, morphology_mip=False, morphology_focus=False, cells_as_circles=True,
    aligned_images=True)``; ``cells_labels=True`` / ``nucleus_labels=True`` also work (the masks are written).

    Files::

        experiment.xenium                 JSON: pixel_size 0.2125, analysis_sw_version "xenium-2.0.0.10", ...
        cell_feature_matrix.h5            10x HDF5; features: GENES ("Gene Expression", Ensembl ids) and a few
                                          control features ("Negative Control Probe" / "Negative Control Codeword" /
                                          "Unassigned Codeword"); barcodes = cell ids
        cells.parquet                     cell_id, x_centroid, y_centroid (µm), transcript_counts,
                                          control_probe_counts, genomic_control_counts, control_codeword_counts,
                                          unassigned_codeword_counts, deprecated_codeword_counts, total_counts,
                                          cell_area, nucleus_area (µm²), nucleus_count, segmentation_method
        cells.zarr.zip                    zarr v2 in a zip: cell_id (n, 2) uint32 (prefix, suffix), cell_summary
                                          (n, 8) float64 with attribute column_names, masks/0 (nuclei) and masks/1
                                          (cells) uint32 label images in morphology pixels (label = polygon index + 1),
                                          polygon_sets/{0,1}/cell_index (one nucleus per cell)
        {sample_name}_he_image.ome.tif    RGB OME-TIFF (physical size he_mpp, one 2x sub-resolution in a SubIFD)
        {sample_name}_he_imagealignment.csv   3x3 matrix, no header: H&E pixels -> morphology pixels

    The reader finds the H&E pair by name: ``*he_image.ome.tif`` and the same name with ``.ome.tif`` replaced by
    ``alignment.csv``. Not written (turned off in the reader call above): transcripts.parquet, cell/nucleus
    boundaries, morphology images, the polygons' vertices of cells.zarr.zip, analysis/, metrics, the panel JSON.

    Geometry: cells on a jittered hexagonal lattice (15 µm, down to 10 µm for many cells) inside a tissue ellipse
    of the ``width_um`` x ``height_um`` µm region (µm frame of the Xenium slide, origin at the morphology image's
    corner), ``n_cells`` of them at random; cell masks are discs of radius 5-7 µm cut by the nearest-centroid rule,
    nuclei discs of 2.5-3.5 µm. The H&E image is NOT in the morphology frame: its pixel q maps to
    ``R(rotation_deg) @ (he_mpp * q) + t`` µm, ``t`` chosen so that the tissue lies inside the image
    (``translation_um``). Its tissue is pink with a purple dot on each nucleus; green squares (side
    ``marker_size_um`` in µm, so rotated in the image) are centred on the centroids of ``n_markers`` cells.

    Returns
    -------
    :class:`XeniumTruth`: cell ids, centroids (µm), areas, counts, genes, the alignment (H&E px -> morphology px), the
    H&E µm per pixel, the markers (µm, H&E pixels, cell under each) and the cells within 10 µm of each marker.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ps = XENIUM_PIXEL_SIZE

    # --- cells: a jittered hexagonal lattice in a tissue ellipse
    ex, ey, ax, ay = width_um / 2, height_um / 2, 0.45 * width_um, 0.44 * height_um

    def in_tissue(x, y, inset: float = 0.0):  # inside the ellipse, at least ~inset µm from its edge
        return ((x - ex) / (ax - inset)) ** 2 + ((y - ey) / (ay - inset)) ** 2 <= 1.0

    # lattice step: 15 µm, or less (down to 10 µm) when n_cells need it; jitter +-0.15 step keeps cells >= 7 µm apart
    area = math.pi * (ax - 8.0) * (ay - 8.0)
    step = max(min(15.0, math.sqrt(area / (n_cells * 1.2 * math.sqrt(3) / 2))), 10.0)
    gy, gx = np.meshgrid(np.arange(0, height_um, step * math.sqrt(3) / 2), np.arange(0, width_um, step), indexing="ij")
    gx = gx + (np.arange(gx.shape[0])[:, None] % 2) * step / 2
    lattice = np.c_[gx.ravel(), gy.ravel()] + rng.uniform(-0.15 * step, 0.15 * step, (gx.size, 2))
    candidates = np.flatnonzero(in_tissue(lattice[:, 0], lattice[:, 1], inset=8.0))
    if len(candidates) < n_cells:
        raise ValueError(f"only {len(candidates)} cells fit in {width_um} x {height_um} µm; ask for fewer")
    cells_um = np.round(lattice[rng.choice(candidates, n_cells, replace=False)], 4)
    n = n_cells
    prefixes = np.sort(rng.choice(2**20, n, replace=False)).astype(np.uint32)
    cell_ids = _xenium_cell_id(prefixes)  # sorted like the prefixes; the positions are in random order

    # --- masks (morphology pixels): cells = discs cut by the nearest centroid, nuclei = smaller discs
    mh, mw = math.ceil(height_um / ps), math.ceil(width_um / ps)
    cell_r = rng.uniform(5.0, 7.0, n)
    nuc_r = rng.uniform(2.5, 3.5, n)
    cell_mask = np.zeros((mh, mw), np.uint32)
    nuc_mask = np.zeros((mh, mw), np.uint32)
    best = np.full((mh, mw), np.inf, np.float32)
    for i, ((x, y), rc, rn) in enumerate(zip(cells_um, cell_r, nuc_r)):
        cx, cy, rpx = x / ps, y / ps, rc / ps
        j0, j1 = max(int(cx - rpx) - 1, 0), min(int(cx + rpx) + 2, mw)
        i0, i1 = max(int(cy - rpx) - 1, 0), min(int(cy + rpx) + 2, mh)
        d2 = ((np.arange(j0, j1) + 0.5 - cx) ** 2)[None, :] + ((np.arange(i0, i1) + 0.5 - cy) ** 2)[:, None]
        win = (d2 <= rpx**2) & (d2 < best[i0:i1, j0:j1])
        cell_mask[i0:i1, j0:j1][win] = i + 1
        best[i0:i1, j0:j1][win] = d2[win]
        nuc_mask[i0:i1, j0:j1][d2 <= (rn / ps) ** 2] = i + 1
    cell_area = np.bincount(cell_mask.ravel(), minlength=n + 1)[1:] * ps**2
    nucleus_area = np.bincount(nuc_mask.ravel(), minlength=n + 1)[1:] * ps**2

    # --- counts: genes, then control features (dropped by gex_only)
    rates = _rates(cells_um[:, 0], (0.0, width_um), depth)
    counts = _draw_counts(rates, rng)
    controls = {
        "NegControlProbe_00042": "Negative Control Probe",
        "NegControlProbe_00041": "Negative Control Probe",
        "NegControlCodeword_0500": "Negative Control Codeword",
        "NegControlCodeword_0501": "Negative Control Codeword",
        "UnassignedCodeword_0000": "Unassigned Codeword",
        "UnassignedCodeword_0001": "Unassigned Codeword",
    }
    control_counts = rng.poisson(0.05, (n, len(controls))).astype(np.int32)
    ctype = np.array(list(controls.values()))
    _write_10x_h5(
        root / "cell_feature_matrix.h5",
        cell_ids,
        np.c_[counts, control_counts],
        ids=[GENE_IDS[g] for g in GENES] + list(controls),
        names=list(GENES) + list(controls),
        feature_types=["Gene Expression"] * len(GENES) + list(controls.values()),
        genome="Unknown",
        attrs={
            "filetype": np.bytes_("matrix"),
            "version": np.int64(2),
            "software_version": np.bytes_("xenium-2.0.0.10"),
            "chemistry_description": np.bytes_("Xenium"),
        },
    )
    probe = control_counts[:, ctype == "Negative Control Probe"].sum(1)
    codeword = control_counts[:, ctype == "Negative Control Codeword"].sum(1)
    unassigned = control_counts[:, ctype == "Unassigned Codeword"].sum(1)
    transcripts = counts.sum(1)
    cells = pd.DataFrame(
        {
            "cell_id": cell_ids,
            "x_centroid": cells_um[:, 0],
            "y_centroid": cells_um[:, 1],
            "transcript_counts": transcripts.astype(np.uint32),
            "control_probe_counts": probe.astype(np.uint32),
            "genomic_control_counts": np.zeros(n, np.uint32),
            "control_codeword_counts": codeword.astype(np.uint32),
            "unassigned_codeword_counts": unassigned.astype(np.uint32),
            "deprecated_codeword_counts": np.zeros(n, np.uint32),
            "total_counts": (transcripts + probe + codeword + unassigned).astype(np.uint32),
            "cell_area": cell_area,
            "nucleus_area": nucleus_area,
            "nucleus_count": np.ones(n, np.uint32),
            "segmentation_method": "Segmented by nucleus expansion of 5.0µm",
        }
    )
    cells.to_parquet(root / "cells.parquet", index=False)

    # --- cells.zarr.zip (zarr v2 in a zip, as XOA writes it)
    import zarr

    with tempfile.TemporaryDirectory() as tmp:
        g = zarr.open_group(Path(tmp) / "cells.zarr", mode="w", zarr_format=2)
        g.attrs.update({"major_version": 5, "minor_version": 0, "number_cells": n, "spatial_units": "microns"})
        g.create_array("cell_id", data=np.c_[prefixes, np.ones(n, np.uint32)].astype(np.uint32))
        summary = np.c_[cells_um, cell_area, cells_um, nucleus_area, np.zeros(n), np.ones(n)].astype(np.float64)
        cs = g.create_array("cell_summary", data=summary)
        cs.attrs["column_names"] = [
            "cell_centroid_x",
            "cell_centroid_y",
            "cell_area",
            "nucleus_centroid_x",
            "nucleus_centroid_y",
            "nucleus_area",
            "z_level",
            "nucleus_count",
        ]
        masks = g.create_group("masks")
        masks.create_array("0", data=nuc_mask, chunks=(1024, 1024))
        masks.create_array("1", data=cell_mask, chunks=(1024, 1024))
        sets = g.create_group("polygon_sets")
        for k, method in enumerate(("nucleus", "cell")):
            s = sets.create_group(str(k))
            s.attrs["name"] = method
            s.create_array("cell_index", data=np.arange(n, dtype=np.uint32))
        _zip_folder(Path(tmp) / "cells.zarr", root / "cells.zarr.zip")

    experiment = {
        "major_version": 5,
        "minor_version": 0,
        "run_name": "tiny test run",
        "run_start_time": "2024-01-01T00:00:00Z",
        "region_name": "region_1",
        "preservation_method": "ffpe",
        "num_cells": n,
        "transcripts_per_cell": int(np.median(transcripts)),
        "cassette_name": "test",
        "slide_id": "0000000",
        "panel_design_id": "test",
        "panel_name": "tiny test panel",
        "panel_organism": "Human",
        "panel_num_targets_predesigned": len(GENES),
        "panel_num_targets_custom": 0,
        "pixel_size": ps,
        "instrument_sn": "0000",
        "instrument_sw_version": "2.0.1.0",
        "analysis_sw_version": "xenium-2.0.0.10",
        "z_step_size": 3.0,
    }
    (root / "experiment.xenium").write_text(json.dumps(experiment, indent=4))

    # --- the H&E image in its own frame: q (H&E px) -> R @ (he_mpp * q) + t (µm)
    rot = _rotation(rotation_deg)
    pad_um = 12.0
    corners = np.array([[0, 0], [width_um, 0], [0, height_um], [width_um, height_um]], float)
    local = corners @ rot  # R^T @ corner for each corner: the corners in the rotated (H&E-aligned) axes
    t_local = local.min(0) - pad_um
    t = rot @ t_local
    he_w = math.ceil((local[:, 0].max() - t_local[0] + pad_um) / he_mpp)
    he_h = math.ceil((local[:, 1].max() - t_local[1] + pad_um) / he_mpp)
    he_to_um = np.eye(3)
    he_to_um[:2, :2] = rot * he_mpp
    he_to_um[:2, 2] = t
    alignment = np.diag([1 / ps, 1 / ps, 1.0]) @ he_to_um  # H&E px -> morphology px

    # every H&E pixel's centre in µm
    jj, ii = np.meshgrid(np.arange(he_w, dtype=np.float32) + 0.5, np.arange(he_h, dtype=np.float32) + 0.5)
    xu = he_to_um[0, 0] * jj + he_to_um[0, 1] * ii + he_to_um[0, 2]
    yu = he_to_um[1, 0] * jj + he_to_um[1, 1] * ii + he_to_um[1, 2]
    he = _canvas(in_tissue(xu, yu), rng)
    um_to_he = np.linalg.inv(he_to_um)
    cells_he = cells_um @ um_to_he[:2, :2].T + um_to_he[:2, 2]
    for (cx, cy), rn in zip(cells_he, nuc_r):
        rpx = rn / he_mpp
        j0, j1 = max(int(cx - rpx) - 1, 0), min(int(cx + rpx) + 2, he_w)
        i0, i1 = max(int(cy - rpx) - 1, 0), min(int(cy + rpx) + 2, he_h)
        d2 = ((np.arange(j0, j1) + 0.5 - cx) ** 2)[None, :] + ((np.arange(i0, i1) + 0.5 - cy) ** 2)[:, None]
        he[i0:i1, j0:j1][d2 <= rpx**2] = NUCLEUS_RGB

    # markers: squares (in µm) centred on some cells' centroids, away from the tissue's edge
    inner = np.flatnonzero(in_tissue(cells_um[:, 0], cells_um[:, 1], inset=25.0))
    marker_cells = np.sort(_pick_spread(inner, cells_um, n_markers, rng))
    marker_um = cells_um[marker_cells]
    half = marker_size_um / 2
    for mx, my in marker_um:
        he[(np.abs(xu - mx) <= half) & (np.abs(yu - my) <= half)] = GREEN
    near = [np.flatnonzero(np.linalg.norm(cells_um - m, axis=1) <= 10.0) for m in marker_um]

    he_name = f"{sample_name}_he_image.ome.tif"
    alignment_name = f"{sample_name}_he_imagealignment.csv"
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": he_mpp,
        "PhysicalSizeY": he_mpp,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeYUnit": "µm",
    }
    options = {"photometric": "rgb", "compression": "zlib", "tile": (256, 256)}
    with tifffile.TiffWriter(root / he_name, ome=True) as tif:
        tif.write(he, subifds=1, metadata=metadata, **options)
        tif.write(_downscale(he, 0.5), subfiletype=1, **options)
    rows = [",".join(repr(float(v)) for v in alignment[0]), ",".join(repr(float(v)) for v in alignment[1]), "0,0,1"]
    (root / alignment_name).write_text("\n".join(rows) + "\n")

    return XeniumTruth(
        root=root,
        pixel_size=ps,
        cell_ids=cell_ids,
        cells_um=cells_um,
        cell_area_um2=cell_area,
        nucleus_area_um2=nucleus_area,
        genes=GENES,
        counts=counts,
        rates=rates,
        control_features=tuple(controls),
        control_counts=control_counts,
        he_image_file=he_name,
        alignment_file=alignment_name,
        he_mpp=he_mpp,
        he_shape=(he_h, he_w),
        rotation_deg=rotation_deg,
        translation_um=(float(t[0]), float(t[1])),
        alignment=alignment,
        marker_cells=marker_cells,
        marker_um=marker_um,
        marker_he_px=marker_um @ um_to_he[:2, :2].T + um_to_he[:2, 2],
        marker_size_um=marker_size_um,
        cells_near_marker=near,
        morphology_shape=(mh, mw),
    )
