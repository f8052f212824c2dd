"""Loader of the Her2ST breast-cancer spatial transcriptomics data (Andersson et al., Nat. Commun. 2021)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg, progress

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

HER2ST_SECTIONS: tuple[str, ...] = tuple(
    [f"{p}{i}" for p in "ABCD" for i in range(1, 7) if f"{p}{i}" != "B4"]
    + [f"{p}{i}" for p in "EFGH" for i in (1, 2, 3)]
)
"""Sections with expression (35; patient B's section B4 is not in the public files)."""

HER2ST_IMAGE_SECTIONS: tuple[str, ...] = ("C2", "C3", "C4", "C5", "C6")
"""Sections whose full-resolution H&E image is available."""

_LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")


def _files_for(section: str) -> list[str]:
    files = [f"counts/{section}.tsv.gz", f"spots/{section}_selection.tsv"]
    if section in HER2ST_IMAGE_SECTIONS:
        files.append(f"images/{section}.jpg")
    if section in _LABELLED:
        files.append(f"labels/{section}_labeled_coordinates.tsv")
    return files


def _has_files(root: Path, sections: Iterable[str]) -> bool:
    return all((root / f).is_file() for s in sections for f in _files_for(s))


def _candidates(root: Path) -> list[Path]:
    return [root, root / "her2st"]


def _locate(sections: Sequence[str], path: str | os.PathLike | None) -> Path:
    """Find the Her2ST folder: ``path``, then ``settings.datadir``, then the download cache."""
    from sthinge._settings import settings

    if path is not None:
        root = Path(path).expanduser()
        for cand in _candidates(root):
            if _has_files(cand, sections):
                return cand
        missing = [f for s in sections for f in _files_for(s) if not (root / f).is_file()]
        raise FileNotFoundError(
            f"`path` {str(root)!r} does not hold the Her2ST files for {list(sections)}; missing e.g. {missing[:3]}. "
            "Expected the layout counts/<S>.tsv.gz, spots/<S>_selection.tsv, images/<S>.jpg."
        )
    if settings.datadir is not None:
        for cand in _candidates(settings.datadir):
            if _has_files(cand, sections):
                return cand
        logg.info(f"Her2ST files for {list(sections)} not found under STHINGE_DATA_DIR={settings.datadir}.")
    cache = settings.cachedir / "her2st"
    if not _has_files(cache, sections):
        from sthinge._utils import _check_writable_dir

        _check_writable_dir("settings.cachedir (STHINGE_CACHE_DIR)", cache)  # before downloading anything
        _download(sections, cache)
    return cache


def _download(sections: Sequence[str], cache: Path) -> None:
    """Download the files of ``sections`` into ``cache`` with pinned sha256 hashes (pooch)."""
    import pooch

    from sthinge.datasets import _registry

    files = [f for s in sections for f in _files_for(s)]
    fetcher = pooch.create(
        path=cache,
        base_url="",
        registry={f: f"sha256:{_registry.FILES[f][0]}" for f in files},
        urls={f: _registry.url(f) for f in files},
        retry_if_failed=2,
    )
    for f in progress(files, desc="downloading Her2ST"):
        try:
            fetcher.fetch(f, progressbar=False)
        except ValueError as err:  # hash mismatch: pooch removed the file
            raise ValueError(
                f"Download of Her2ST file {f!r} is corrupted (sha256 mismatch); nothing was kept. {err}"
            ) from err
        except Exception as err:  # network errors of all kinds
            raise FileNotFoundError(
                f"Could not download the Her2ST file {f!r} ({type(err).__name__}: {err}). Without internet, put the "
                "files from github.com/almaan/her2st (or the reference copy) in a folder with the layout "
                "counts/<S>.tsv.gz, spots/<S>_selection.tsv, images/<S>.jpg, labels/<S>_labeled_coordinates.tsv "
                "and pass it as `path=` or set the environment variable STHINGE_DATA_DIR to its parent."
            ) from err


@contextlib.contextmanager
def _trusted_large_images():
    """Let PIL open the ~92 megapixel Her2ST JPEGs (above its decompression-bomb limit), for these files only."""
    from PIL import Image

    old = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = 400_000_000
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = old


def _read_section(root: Path, section: str):
    import pandas as pd
    import scipy.sparse as sp
    from PIL import Image

    from sthinge.datasets._common import SectionData

    counts = pd.read_csv(root / f"counts/{section}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(root / f"spots/{section}_selection.tsv", sep="\t")
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    spots = spots[~spots.index.duplicated()]
    common = [b for b in counts.index if b in spots.index]
    if len(common) < len(counts.index):
        logg.info(f"{section}: {len(counts.index) - len(common)} spot(s) with counts but no position were dropped.")
    counts = counts.loc[common]
    spots = spots.loc[common]
    # scale from the spot grid: neighbouring spots are 200 µm apart (a linear fit of pixel on array coordinates)
    px_per_step = float(np.polyfit(spots["x"].to_numpy(float), spots["pixel_x"].to_numpy(float), 1)[0])
    py_per_step = float(np.polyfit(spots["y"].to_numpy(float), spots["pixel_y"].to_numpy(float), 1)[0])
    px_per_step = float(np.mean([abs(px_per_step), abs(py_per_step)]))
    mpp = K.HER2ST_SPOT_SPACING_UM / px_per_step

    obs_extra = {}
    label_file = root / f"labels/{section}_labeled_coordinates.tsv"
    if label_file.is_file():
        lab = pd.read_csv(label_file, sep="\t").dropna(subset=["x", "y"])
        key = lab["x"].round().astype(int).astype(str) + "x" + lab["y"].round().astype(int).astype(str)
        lab_map = dict(zip(key, lab["label"].astype(str)))
        obs_extra[K.LABEL_KEY] = np.array([lab_map.get(b, np.nan) for b in common], dtype=object)

    image = None
    image_file = root / f"images/{section}.jpg"
    if image_file.is_file():
        with _trusted_large_images(), Image.open(image_file) as im:
            image = np.asarray(im.convert("RGB"))
    values = counts.to_numpy()
    if (values < 0).any():
        raise ValueError(f"Her2ST section {section} has negative counts; the file is corrupted.")
    return SectionData(
        name=section,
        patient=section[0],
        counts=sp.csr_matrix(values.astype(np.int32)),
        genes=[str(g) for g in counts.columns],
        barcodes=list(common),
        array_xy=spots[["x", "y"]].to_numpy(int),
        pixel_xy=spots[["pixel_x", "pixel_y"]].to_numpy(float),
        mpp=mpp,
        spot_diameter_um=K.HER2ST_SPOT_DIAMETER_UM,
        image=image,
        obs_extra=obs_extra,
    )


def her2st(sections: str | Sequence[str] | None = None, *, path: str | os.PathLike | None = None) -> SpatialData:
    """Load Her2ST sections as one SpatialData object.

    Legacy spatial transcriptomics of HER2-positive breast tumours (8 patients A–H; 100 µm spots on a 200 µm
    grid). Full-resolution H&E images are available for patient C's sections C2–C6; all other sections load
    with expression and spot positions only.

    Files are looked up in ``path``, then in ``settings.datadir`` (environment variable ``STHINGE_DATA_DIR``,
    folder ``her2st/``), then in the download cache (``settings.cachedir / "her2st"``), downloading what is
    missing from the public repository with pinned sha256 hashes.

    Parameters
    ----------
    sections
        Section names (e.g. ``["C2", "C3"]``) or a single name; ``None`` loads all 35 sections.
    path
        Folder holding ``counts/``, ``spots/``, ``images/`` and ``labels/`` (or its parent).

    Returns
    -------
    A :class:`spatialdata.SpatialData` with, per section ``S`` in its own coordinate system ``S``:

    - ``images[f"{S}_image"]``: the H&E image (multiscale, RGB uint8), where available;
    - ``shapes[f"{S}_spots"]``: circles at the spot centres with the true 50 µm radius in pixels;

    and one table ``tables["table"]`` (raw integer counts, sparse) annotating the spot shapes
    (``region``/``spot_id``), with ``obs["section"]``, ``obs["patient"]``, ``obs["array_x"]``,
    ``obs["array_y"]``, ``obs["label"]`` (pathologist labels where they exist), ``obsm["spatial"]`` (pixels),
    ``var["n_sections"]``/``var["sections"]`` (genes are the union over sections; zero where a section does
    not list a gene), and ``uns["sthinge_sections"][S]["mpp"]``, the micrometres per pixel derived from the
    spot grid.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.her2st(["C2"])  # doctest: +SKIP
    """
    if sections is None:
        sections = list(HER2ST_SECTIONS)
    elif isinstance(sections, str):
        sections = [sections]
    elif not isinstance(sections, Sequence) or not all(isinstance(s, str) for s in sections):
        raise TypeError(f"`sections` must be a section name or a list of names, got {sections!r}.")
    sections = list(dict.fromkeys(sections))
    if not sections:
        raise ValueError("`sections` is empty; pass at least one section name, e.g. ['C2'].")
    unknown = [s for s in sections if s not in HER2ST_SECTIONS]
    if unknown:
        raise ValueError(f"Unknown Her2ST section(s) {unknown}; `sections` must be among {list(HER2ST_SECTIONS)}.")

    from sthinge.datasets._common import build_spatialdata

    root = _locate(sections, path)
    data = [_read_section(root, s) for s in progress(sections, desc="reading Her2ST")]
    return build_spatialdata(data)
