"""Small builders of SpatialData / AnnData with known images for the pp tests."""

from __future__ import annotations

import numpy as np

PERIOD_UM = 56.0


def pattern(h: int, w: int, mpp: float) -> np.ndarray:
    """(h, w, 3) uint8: R and G are sinusoids of x and y in micrometres (period 56 µm), B a constant."""
    x_um = (np.arange(w) + 0.5) * mpp
    y_um = (np.arange(h) + 0.5) * mpp
    r = 128 + 100 * np.sin(2 * np.pi * x_um / PERIOD_UM)
    g = 128 + 100 * np.sin(2 * np.pi * y_um / PERIOD_UM)
    img = np.empty((h, w, 3), dtype=np.uint8)
    img[..., 0] = np.rint(r)[None, :]
    img[..., 1] = np.rint(g)[:, None]
    img[..., 2] = 60
    return img


def expected_tile(cx_um: float, cy_um: float, tile_um: float, n: int) -> np.ndarray:
    """(3, n, n) float in [0, 1]: the pattern sampled on an n x n grid over the tile centred at (cx, cy) µm."""
    s = cx_um - tile_um / 2 + (np.arange(n) + 0.5) * tile_um / n
    t = cy_um - tile_um / 2 + (np.arange(n) + 0.5) * tile_um / n
    out = np.empty((3, n, n))
    out[0] = (128 + 100 * np.sin(2 * np.pi * s / PERIOD_UM))[None, :] / 255
    out[1] = (128 + 100 * np.sin(2 * np.pi * t / PERIOD_UM))[:, None] / 255
    out[2] = 60 / 255
    return out


def make_sdata(
    image: np.ndarray | None,
    spots_px: np.ndarray,
    mpp: float,
    *,
    diameter_um: float = 100.0,
    n_genes: int = 5,
    name: str = "A",
    seed: int = 0,
    scale_factors=(2, 2),
):
    """One section in sthinge's layout with ``image`` (y, x, 3) and spots at ``spots_px`` (x, y)."""
    import scipy.sparse as sp

    from sthinge._vocab import cellfm_vocab
    from sthinge.datasets._common import SectionData, build_spatialdata

    rng = np.random.default_rng(seed)
    n = len(spots_px)
    genes = list(cellfm_vocab(27855)[100 : 100 + n_genes])
    sec = SectionData(
        name=name,
        patient="P",
        counts=sp.csr_matrix(rng.poisson(3.0, size=(n, n_genes)).astype(np.int32)),
        genes=genes,
        barcodes=[f"{i}x0" for i in range(n)],
        array_xy=np.c_[np.arange(n), np.zeros(n, int)],
        pixel_xy=np.asarray(spots_px, dtype=float),
        mpp=mpp,
        spot_diameter_um=diameter_um,
        image=image,
    )
    return build_spatialdata([sec], scale_factors=scale_factors)


class Identity:
    """A torch module returning the (flattened) tile it is given: lets tests look at the tiles."""

    def __new__(cls):
        import torch

        class Identity(torch.nn.Module):
            def forward(self, x):
                return x.flatten(1)

        return Identity()


def _snapshot(data) -> dict:
    """A cheap fingerprint of a table / SpatialData, used by tests to assert that nothing was written."""
    table = data if hasattr(data, "obs") else data.tables["table"]
    out = {
        "obs": list(table.obs.columns),
        "var": list(table.var.columns),
        "obsm": list(table.obsm.keys()),
        "uns": sorted(table.uns.keys()),
        "layers": list(table.layers.keys()),
        "shape": table.shape,
    }
    if hasattr(data, "shapes"):
        out["shapes"] = sorted(data.shapes.keys())
        out["tables"] = sorted(data.tables.keys())
        out["images"] = sorted(data.images.keys())
    return out
