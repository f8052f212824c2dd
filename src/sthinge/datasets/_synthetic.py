"""A small synthetic dataset whose expression truly depends on the local H&E image."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._utils import _check_int

if TYPE_CHECKING:  # pragma: no cover
    from spatialdata import SpatialData

# optical densities of haematoxylin and eosin (Ruifrok & Johnston), RGB
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], n_bumps: int, width: float) -> np.ndarray:
    """Sum of random Gaussian bumps, rescaled to [0, 1]."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(n_bumps):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        w = width * rng.uniform(0.6, 1.4)
        field += rng.uniform(0.5, 1.0) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * w * w))
    field -= field.min()
    return field / max(float(field.max()), 1e-8)


def synthetic(
    *,
    n_sections: int = 3,
    n_spots: int = 144,
    n_genes: int = 60,
    image: bool = True,
    seed: int = 0,
) -> SpatialData:
    """Generate a small Her2ST-like SpatialData in memory, with expression driven by the image.

    Every section is a square grid of spots 200 µm apart (100 µm diameter, as in legacy ST) over a
    synthetic H&E image. Two smooth stain fields (haematoxylin- and eosin-like) colour the tissue, and
    each gene's expected count is a log-linear function of the stain densities under the spot (plus an
    interaction), so a model that reads the image can predict expression and one that does not cannot.
    The micrometres-per-pixel scale differs slightly between sections, so code that assumes a constant
    pixel size fails.

    Parameters
    ----------
    n_sections
        Number of sections (each its own coordinate system).
    n_spots
        Spots per section (rounded down to a square grid, at least 4).
    n_genes
        Number of genes; symbols are real genes present in both CellFM vocabularies.
    image
        Whether to generate the H&E images (``False`` gives expression and shapes only).
    seed
        Random seed; the same seed gives the same object.

    Returns
    -------
    A :class:`spatialdata.SpatialData` in sthinge's layout (see :func:`sthinge.datasets.her2st`), with
    the true stain densities under each spot in ``table.obsm["synthetic_factors"]``.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(n_sections=2, n_spots=64, n_genes=30)
    >>> sdata.tables["table"].shape
    (128, 30)
    """
    import scipy.sparse as sp

    from sthinge._vocab import cellfm_vocab
    from sthinge.datasets._common import SectionData, build_spatialdata

    n_sections = _check_int("n_sections", n_sections, low=1, high=100)
    n_spots = _check_int("n_spots", n_spots, low=4, high=1_000_000)
    n_genes = _check_int("n_genes", n_genes, low=2, high=5000)
    seed = _check_int("seed", seed, low=0)
    if not isinstance(image, bool):
        raise TypeError(f"`image` must be a bool, got {type(image).__name__}.")

    rng = np.random.default_rng(seed)
    shared = sorted(set(cellfm_vocab(27855)) & set(cellfm_vocab(24078)))
    genes = [shared[i] for i in np.sort(rng.choice(len(shared), size=n_genes, replace=False))]

    # gene programme: log-rate = b + w_h * H + w_e * E + w_he * H * E
    base = rng.normal(-0.5, 1.0, size=n_genes)
    w = rng.normal(0.0, 1.6, size=(3, n_genes))
    side = max(2, int(np.sqrt(n_spots)))
    spacing_um, diameter_um = K.HER2ST_SPOT_SPACING_UM, K.HER2ST_SPOT_DIAMETER_UM

    sections = []
    for s in range(n_sections):
        mpp = float(4.0 * (1.0 + 0.08 * (s - (n_sections - 1) / 2)))  # micrometres per pixel, varies by section
        step_px = spacing_um / mpp
        margin = int(round(1.5 * step_px))
        size = int(round((side - 1) * step_px)) + 2 * margin
        shape = (size, size)
        hem = _smooth_field(rng, shape, n_bumps=6, width=1.8 * step_px)
        eos = _smooth_field(rng, shape, n_bumps=6, width=1.8 * step_px)

        ax, ay = np.meshgrid(np.arange(side), np.arange(side))
        array_xy = np.stack([ax.ravel(), ay.ravel()], axis=1)
        offset = margin + rng.uniform(-0.2, 0.2, size=2) * step_px
        pixel_xy = array_xy * step_px + offset  # (x, y)

        # stain densities averaged over each spot disc
        radius_px = diameter_um / 2 / mpp
        yy, xx = np.mgrid[0:size, 0:size]
        factors = np.empty((len(pixel_xy), 2))
        for i, (px, py) in enumerate(pixel_xy):
            y0, y1 = int(max(py - radius_px, 0)), int(min(py + radius_px + 1, size))
            x0, x1 = int(max(px - radius_px, 0)), int(min(px + radius_px + 1, size))
            disc = (yy[y0:y1, x0:x1] - py) ** 2 + (xx[y0:y1, x0:x1] - px) ** 2 <= radius_px**2
            factors[i] = hem[y0:y1, x0:x1][disc].mean(), eos[y0:y1, x0:x1][disc].mean()

        h, e = factors[:, :1], factors[:, 1:]
        log_rate = base + w[0] * (2 * h - 1) + w[1] * (2 * e - 1) + w[2] * (2 * h - 1) * (2 * e - 1)
        library = rng.lognormal(np.log(2000.0), 0.25, size=(len(pixel_xy), 1))
        rate = np.exp(log_rate)
        rate = library * rate / rate.sum(axis=1, keepdims=True)
        counts = rng.poisson(rate).astype(np.int32)

        img = None
        if image:
            yy_c = (yy - size / 2) / (size / 2)
            xx_c = (xx - size / 2) / (size / 2)
            # a disc of tissue, slide background at the corners
            tissue = ((yy_c**2 + xx_c**2) <= 1.15).astype(np.float32)
            od = 0.15 + 1.2 * hem[..., None] * _H_OD + 0.9 * eos[..., None] * _E_OD
            od = od + rng.normal(0, 0.04, size=od.shape)  # texture
            rgb = 255.0 * np.exp(-od)
            background = np.array([243.0, 241.0, 245.0]) + rng.normal(0, 2.0, size=(*shape, 3))
            img = np.clip(tissue[..., None] * rgb + (1 - tissue[..., None]) * background, 0, 255).astype(np.uint8)

        labels = np.where(h[:, 0] > np.median(h), "tumour-like", "stroma-like")
        sections.append(
            SectionData(
                name=f"S{s + 1}",
                patient=f"P{s // 2 + 1}",
                counts=sp.csr_matrix(counts),
                genes=genes,
                barcodes=[f"{x}x{y}" for x, y in array_xy],
                array_xy=array_xy,
                pixel_xy=pixel_xy,
                mpp=mpp,
                spot_diameter_um=diameter_um,
                image=img,
                obs_extra={K.LABEL_KEY: labels},
                obsm_extra={"synthetic_factors": factors.astype(np.float32)},
            )
        )
    return build_spatialdata(sections)
