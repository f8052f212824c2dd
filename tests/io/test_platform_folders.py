"""The 10x platform folders written by ``platforms.py`` (Space Ranger Visium, Visium HD, Xenium + H&E): spatialdata-io
reads them unchanged, and what it reads agrees with the ground truth the writers return: counts by barcode / cell id,
shape centres, and a green marker at the image pixel (levels 0 and 1) that a shape centre maps to through
spatialdata's transformations."""

from __future__ import annotations

import math

import numpy as np
import pytest

sdio = pytest.importorskip("spatialdata_io")

from platforms import GENES, is_green, write_spaceranger, write_visium_hd, write_xenium  # noqa: E402

# the readers, which spatialdata-io loads lazily: their heavy imports happen here, at collection, not in a test
read_visium, read_visium_hd, read_xenium = sdio.visium, sdio.visium_hd, sdio.xenium


def _affine(element, cs: str) -> np.ndarray:
    """The element's transformation to ``cs`` as a 3x3 (x, y) affine matrix."""
    from spatialdata.transformations import get_transformation

    t = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _levels(image) -> list:
    """The scales of an image element (a DataTree: scale0, scale1, ...; a DataArray: itself), finest first."""
    from xarray import DataTree

    if isinstance(image, DataTree):
        return [image[k]["image"] for k in sorted(image.children, key=lambda k: int(k.removeprefix("scale")))]
    return [image]


def _rgb_at(level, xy_cs, cs: str) -> np.ndarray:
    """The RGB of the pixel of one image level under the point ``xy_cs`` (coordinates of ``cs``)."""
    x, y, _ = np.linalg.inv(_affine(level, cs)) @ np.r_[np.asarray(xy_cs, float), 1.0]
    i, j = math.floor(y), math.floor(x)
    assert 0 <= i < level.sizes["y"] and 0 <= j < level.sizes["x"], (i, j)
    return np.asarray(level.data[:, i, j])


def _to_cs(element, points, cs: str) -> np.ndarray:
    """``(n, 2)`` points of an element's intrinsic coordinates mapped to ``cs``."""
    a = _affine(element, cs)
    return np.asarray(points, float) @ a[:2, :2].T + a[:2, 2]


def _dense(x) -> np.ndarray:
    return np.asarray(x.toarray() if hasattr(x, "toarray") else x)


def _circle_centres(gdf) -> np.ndarray:
    return np.c_[gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()]


# ---------------------------------------------------------------------------------------------------------------------
# Space Ranger (Visium)


@pytest.fixture(scope="module")
def visium(tmp_path_factory):
    truth = write_spaceranger(tmp_path_factory.mktemp("spaceranger"))
    sdata = read_visium(truth.root, dataset_id=truth.dataset_id, fullres_image_file=truth.fullres_image_file)
    return truth, sdata


def test_spaceranger_layout(visium):
    truth, _ = visium
    files = {p.relative_to(truth.root).as_posix() for p in truth.root.rglob("*") if p.is_file()}
    assert {
        "filtered_feature_bc_matrix.h5",
        "raw_feature_bc_matrix.h5",
        "spatial/tissue_positions.csv",
        "spatial/scalefactors_json.json",
        "spatial/tissue_hires_image.png",
        "spatial/tissue_lowres_image.png",
        truth.fullres_image_file,
    } <= files
    header = (truth.root / "spatial" / "tissue_positions.csv").read_text().splitlines()[0]
    assert header == "barcode,in_tissue,array_row,array_col,pxl_row_in_fullres,pxl_col_in_fullres"
    assert ((truth.array_row + truth.array_col) % 2 == 0).all()  # Visium's hexagonal indices
    assert 0 < len(truth.barcodes) < truth.n_spots_total  # some spots are off the tissue
    assert (truth.counts.sum(1) > 0).all() and truth.counts.dtype.kind == "i"
    # 100 µm between neighbours of a row and of adjacent rows
    d = np.linalg.norm(truth.spots_um[:, None] - truth.spots_um[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_allclose(d.min(1), 100.0, atol=1.5)


def test_spaceranger_table(visium):
    truth, sdata = visium
    table = sdata.tables["table"]
    assert list(table.var_names) == list(GENES)
    assert set(table.obs_names) == set(truth.barcodes)
    index = {b: i for i, b in enumerate(truth.barcodes)}
    rows = np.array([index[b] for b in table.obs_names])
    np.testing.assert_array_equal(_dense(table.X), truth.counts[rows])
    np.testing.assert_array_equal(table.obs["array_row"].to_numpy(), truth.array_row[rows])
    np.testing.assert_array_equal(table.obs["array_col"].to_numpy(), truth.array_col[rows])
    assert (table.obs["in_tissue"] == 1).all()


def test_spaceranger_shapes(visium):
    truth, sdata = visium
    table, spots = sdata.tables["table"], sdata.shapes[truth.dataset_id]
    index = {b: i for i, b in enumerate(truth.barcodes)}
    rows = np.array([index[b] for b in table.obs_names])
    centres = _circle_centres(spots.loc[table.obs["spot_id"].to_numpy()])
    np.testing.assert_allclose(centres, truth.spots_px[rows])
    np.testing.assert_allclose(spots["radius"], 55.0 / 2 / truth.mpp)
    np.testing.assert_allclose(_affine(spots, truth.dataset_id), np.eye(3))


def test_spaceranger_markers(visium):
    truth, sdata = visium
    cs = truth.dataset_id
    table, spots = sdata.tables["table"], sdata.shapes[cs]
    spot_of = dict(zip(table.obs_names, table.obs["spot_id"].to_numpy()))
    full = sdata.images[f"{cs}_full_image"]
    levels = _levels(full)
    assert levels[0].shape == (3, *truth.image_shape)
    hires = sdata.images[f"{cs}_hires_image"]
    s = truth.scalefactors["tissue_hires_scalef"]
    assert hires.shape[1:] == (round(truth.image_shape[0] * s), round(truth.image_shape[1] * s))
    for k in truth.marker_spots:
        spot = spots.loc[[spot_of[truth.barcodes[k]]]]
        xy = _to_cs(spot, _circle_centres(spot), cs)[0]
        np.testing.assert_allclose(xy, truth.marker_px[truth.marker_spots.tolist().index(k)])
        for level in (levels[0], levels[1], hires):
            assert is_green(_rgb_at(level, xy, cs)), (k, level.shape)
    # a spot far from every marker is not green
    far = np.argmax(np.min(np.linalg.norm(truth.spots_px[:, None] - truth.marker_px[None], axis=-1), axis=1))
    spot = spots.loc[[spot_of[truth.barcodes[far]]]]
    assert not is_green(_rgb_at(levels[0], _to_cs(spot, _circle_centres(spot), cs)[0], cs))


# ---------------------------------------------------------------------------------------------------------------------
# Visium HD


@pytest.fixture(scope="module")
def visium_hd(tmp_path_factory):
    truth = write_visium_hd(tmp_path_factory.mktemp("visium_hd"))
    sdata = read_visium_hd(
        truth.root,
        dataset_id=truth.dataset_id,
        load_segmentations_only=False,
        fullres_image_file=truth.fullres_image_path,
    )
    return truth, sdata


def test_visium_hd_ground_truth(visium_hd):
    truth, _ = visium_hd
    fine, coarse = truth.bins[8], truth.bins[16]
    assert (fine.counts.sum(1) > 0).all() and (coarse.counts.sum(1) > 0).all()
    assert 0 < len(fine.barcodes) < fine.n_total and 0 < len(coarse.barcodes) < coarse.n_total
    # each 16 µm bin sums the 8 µm bins inside it, and is present iff one of them is
    parent = {(r, c): i for i, (r, c) in enumerate(zip(coarse.array_row, coarse.array_col))}
    summed = np.zeros_like(coarse.counts)
    for r, c, counts in zip(fine.array_row, fine.array_col, fine.counts):
        summed[parent[(r // 2, c // 2)]] += counts
    np.testing.assert_array_equal(summed, coarse.counts)
    # centres on the grid
    for b in (fine, coarse):
        expected = np.c_[b.array_col + 0.5, b.array_row + 0.5] * b.size_um / truth.mpp + truth.origin_px
        np.testing.assert_allclose(b.centres_px, expected)
        assert all(
            bc == f"s_{b.size_um:03d}um_{r:05d}_{c:05d}-1" for bc, r, c in zip(b.barcodes, b.array_row, b.array_col)
        )


@pytest.mark.parametrize("size", [8, 16])
def test_visium_hd_tables(visium_hd, size):
    truth, sdata = visium_hd
    b = truth.bins[size]
    table = sdata.tables[b.name]
    assert list(table.var_names) == list(GENES)
    assert list(table.obs_names) == list(b.barcodes)  # the matrix order: sorted barcodes
    np.testing.assert_array_equal(_dense(table.X), b.counts)
    np.testing.assert_array_equal(table.obs["array_row"].to_numpy(), b.array_row)
    np.testing.assert_array_equal(table.obs["array_col"].to_numpy(), b.array_col)
    assert (table.obs["in_tissue"] == 1).all()


@pytest.mark.parametrize("size", [8, 16])
def test_visium_hd_shapes(visium_hd, size):
    truth, sdata = visium_hd
    b = truth.bins[size]
    table = sdata.tables[b.name]
    squares = sdata.shapes[f"{truth.dataset_id}_{b.name}"]
    assert (table.obs["region"] == f"{truth.dataset_id}_{b.name}").all()
    sq = squares.loc[table.obs["location_id"].to_numpy()]
    centroids = np.c_[sq.geometry.centroid.x, sq.geometry.centroid.y]
    np.testing.assert_allclose(centroids, b.centres_px)
    bounds = sq.geometry.bounds.to_numpy()
    np.testing.assert_allclose(bounds[:, 2] - bounds[:, 0], size / truth.mpp)
    np.testing.assert_allclose(bounds[:, 3] - bounds[:, 1], size / truth.mpp)
    np.testing.assert_allclose(_affine(squares, truth.dataset_id), np.eye(3))


def test_visium_hd_markers(visium_hd):
    truth, sdata = visium_hd
    cs = truth.dataset_id
    levels = _levels(sdata.images[f"{cs}_full_image"])
    assert levels[0].shape == (3, *truth.image_shape)
    hires = sdata.images[f"{cs}_hires_image"]
    fine = truth.bins[truth.finest]
    squares = sdata.shapes[f"{cs}_{fine.name}"]
    location = sdata.tables[fine.name].obs["location_id"].to_numpy()
    for m, k in enumerate(truth.marker_bins[truth.finest]):
        sq = squares.loc[[location[k]]]
        xy = _to_cs(sq, np.c_[sq.geometry.centroid.x, sq.geometry.centroid.y], cs)[0]
        np.testing.assert_allclose(xy, truth.marker_px[m])
        for level in (levels[0], levels[1], hires):
            assert is_green(_rgb_at(level, xy, cs)), (m, level.shape)
        # the larger bin under the marker contains it
        coarse = truth.bins[16]
        big = sdata.shapes[f"{cs}_{coarse.name}"]
        poly = big.loc[sdata.tables[coarse.name].obs["location_id"].to_numpy()[truth.marker_bins[16][m]]].geometry
        x0, y0, x1, y1 = poly.bounds
        assert x0 <= xy[0] <= x1 and y0 <= xy[1] <= y1
    # a bin far from every marker is not green
    far = np.argmax(np.min(np.linalg.norm(fine.centres_px[:, None] - truth.marker_px[None], axis=-1), axis=1))
    assert not is_green(_rgb_at(levels[0], fine.centres_px[far], cs))


def test_visium_hd_defaults_find_everything(visium_hd):
    """Without dataset_id and image path, the reader infers the id from the feature slice and finds the image."""
    truth, _ = visium_hd
    sdata = read_visium_hd(truth.root, load_segmentations_only=False, bin_size=8)
    assert f"{truth.dataset_id}_full_image" in sdata.images
    assert list(sdata.tables) == ["square_008um"]


# ---------------------------------------------------------------------------------------------------------------------
# Xenium + aligned H&E

XENIUM_OFF = {
    "cells_boundaries": False,
    "nucleus_boundaries": False,
    "cells_labels": False,
    "nucleus_labels": False,
    "transcripts": False,
    "morphology_mip": False,
    "morphology_focus": False,
}


@pytest.fixture(scope="module")
def xenium(tmp_path_factory):
    truth = write_xenium(tmp_path_factory.mktemp("xenium"))
    sdata = read_xenium(truth.root, **XENIUM_OFF, cells_as_circles=True, aligned_images=True)
    return truth, sdata


def test_xenium_table(xenium):
    truth, sdata = xenium
    table = sdata.tables["table"]
    assert list(table.var_names) == list(GENES)  # the control features are dropped (gex_only)
    assert list(table.obs_names) == list(truth.cell_ids)
    np.testing.assert_array_equal(_dense(table.X), truth.counts)
    np.testing.assert_allclose(table.obs["cell_area"], truth.cell_area_um2)
    np.testing.assert_array_equal(table.obs["transcript_counts"], truth.counts.sum(1))
    assert (table.obs["region"] == "cell_circles").all()
    np.testing.assert_allclose(table.obsm["spatial"], truth.cells_um)


def test_xenium_circles(xenium):
    truth, sdata = xenium
    circles = sdata.shapes["cell_circles"]
    assert list(circles.index) == list(truth.cell_ids)
    np.testing.assert_allclose(_circle_centres(circles), truth.cells_um)
    np.testing.assert_allclose(circles["radius"], np.sqrt(truth.cell_area_um2 / np.pi))
    np.testing.assert_allclose(_affine(circles, "global"), np.diag([1 / truth.pixel_size, 1 / truth.pixel_size, 1]))


def test_xenium_he_alignment_and_markers(xenium):
    truth, sdata = xenium
    he = sdata.images["he_image"]
    levels = _levels(he)
    assert len(levels) >= 2 and levels[0].shape == (3, *truth.he_shape)
    assert list(levels[0].coords["c"].values) == ["r", "g", "b"]
    np.testing.assert_allclose(_affine(levels[0], "global"), truth.alignment)
    # the H&E is not in the morphology frame: scaled, rotated and shifted
    a = truth.alignment
    np.testing.assert_allclose(np.hypot(a[0, 0], a[1, 0]), truth.he_mpp / truth.pixel_size)
    assert abs(a[1, 0]) > 0.05 and np.abs(a[:2, 2]).min() > 10
    circles = sdata.shapes["cell_circles"]
    for m, k in enumerate(truth.marker_cells):
        cell = circles.loc[[truth.cell_ids[k]]]
        xy = _to_cs(cell, _circle_centres(cell), "global")[0]  # morphology pixels
        np.testing.assert_allclose(xy * truth.pixel_size, truth.marker_um[m])
        for level in levels[:2]:
            assert is_green(_rgb_at(level, xy, "global")), (m, level.shape)
        # read as if the H&E were in the morphology frame, the marker is missed
        j, i = (math.floor(v) for v in xy)
        if i < levels[0].sizes["y"] and j < levels[0].sizes["x"]:
            assert not is_green(np.asarray(levels[0].data[:, i, j]))
        assert k in truth.cells_near_marker[m]
    # the H&E pixel of each marker, from the truth, is green too
    for x, y in truth.marker_he_px:
        assert is_green(np.asarray(levels[0].data[:, math.floor(y), math.floor(x)]))


def test_xenium_labels(xenium):
    """The masks of cells.zarr.zip are written too: the cell and nucleus labels under each centroid are its own."""
    truth, _ = xenium
    off = {**XENIUM_OFF, "cells_labels": True, "nucleus_labels": True}
    sdata = read_xenium(truth.root, **off, cells_as_circles=True, aligned_images=False)
    table = sdata.tables["table"]
    cells = np.asarray(sdata.labels["cell_labels"]["scale0"]["image"].data)
    nuclei = np.asarray(sdata.labels["nucleus_labels"]["scale0"]["image"].data)
    assert cells.shape == truth.morphology_shape
    ij = np.floor(truth.cells_um[:, ::-1] / truth.pixel_size).astype(int)
    np.testing.assert_array_equal(cells[ij[:, 0], ij[:, 1]], table.obs["cell_labels"].to_numpy())
    np.testing.assert_array_equal(nuclei[ij[:, 0], ij[:, 1]], np.arange(1, len(truth.cell_ids) + 1))
