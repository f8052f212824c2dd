"""sthinge on the 10x platform folders written by ``platforms.py`` and read by spatialdata-io unchanged: Visium as it
is, Visium HD through ``pp.aggregate_bins``, Xenium through ``pp.aggregate_cells``. Each reads, puts the tiles on the
right pixels (green markers under the right spots, at pyramid levels 0 and 1), fits one epoch of the tiny preset and
predicts."""

from __future__ import annotations

import numpy as np
import pytest

sdio = pytest.importorskip("spatialdata_io")

from platforms import GENES, write_spaceranger, write_visium_hd, write_xenium  # noqa: E402

import sthinge as st  # noqa: E402
from sthinge import _constants as K  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread", "quiet")


def _greenness_encoder():
    """A user encoder whose one feature is the greenest pixel of the tile (G minus the mean of R and B): about 1
    on a green marker, below 0 on the pink tissue."""
    import torch

    class Green(torch.nn.Module):
        def forward(self, x):
            g = x[:, 1] - (x[:, 0] + x[:, 2]) / 2
            return g.flatten(1).max(1).values[:, None]

    return Green()


def _green(sdata, table_key, *, tile_um, input_size, key="green"):
    st.pp.embed_histology(
        sdata,
        table_key=table_key,
        encoder=_greenness_encoder(),
        input_size=input_size,
        transform=lambda x: x,
        tile_size_um=tile_um,
        key_added=key,
        overwrite=True,
    )
    table = sdata.tables[table_key]
    return table.obsm[key][:, 0], table.uns[key]


def _fit_predict(sdata, table_key, fit_kw):
    st.pp.normalize(sdata, table_key=table_key)
    st.pp.select_genes(sdata, table_key=table_key, n_top=len(GENES), vocab="cellfm-80m")
    st.pp.embed_histology(sdata, table_key=table_key, tile_size_um=32, batch_size=64)
    model = st.tl.fit(sdata, table_key=table_key, **fit_kw)
    st.tl.predict(sdata, model, table_key=table_key, n_steps=2, n_samples=2)
    pred, table = sdata.tables[K.PRED_KEY], sdata.tables[table_key]
    assert pred.shape == (table.n_obs, len(model.genes)) and len(model.genes) >= 20
    assert np.isfinite(np.asarray(pred.X)).all()
    region = table.uns["spatialdata_attrs"]["region"]
    assert pred.uns["spatialdata_attrs"]["region"] in (region, [region])  # the same spots
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Visium (Space Ranger): as spatialdata-io reads it


@pytest.fixture(scope="module")
def visium(tmp_path_factory):
    truth = write_spaceranger(tmp_path_factory.mktemp("spaceranger"))
    sdata = sdio.visium(truth.root, dataset_id=truth.dataset_id, fullres_image_file=truth.fullres_image_file)
    return truth, sdata


@pytest.mark.parametrize(("input_size", "level"), [(16, 0), (8, 1)])
def test_visium_markers_under_their_spots(visium, input_size, level):
    """The 16 µm markers are under the marked spots, read at level 0 (17 px tiles at 1 µm/px) and at level 1; the
    scale comes from Visium's 55 µm spots (spatialdata-io keeps no pixel size)."""
    truth, sdata = visium
    green, info = _green(sdata, "table", tile_um=truth.marker_size_um + 1, input_size=input_size)
    assert info["image"] == {"all": f"{truth.dataset_id}_full_image"}  # the finest of full / hires / lowres
    assert info["level"] == {"all": level}
    assert info["mpp"]["all"] == pytest.approx(truth.mpp, rel=1e-6)
    assert "Visium spot diameter (55 µm)" in info["mpp_source"]["all"]
    index = {b: i for i, b in enumerate(truth.barcodes)}
    marked = np.isin([index[b] for b in sdata.tables["table"].obs_names], truth.marker_spots)
    assert marked.sum() == len(truth.marker_spots)
    assert green[marked].min() > 0.5 and green[~marked].max() < 0.1


def test_visium_fit_predict(visium, tiny_fit_kw):
    _, sdata = visium
    _fit_predict(sdata, "table", tiny_fit_kw)


# ---------------------------------------------------------------------------------------------------------------------
# Visium HD: bins summed to the chosen size


@pytest.fixture(scope="module")
def visium_hd(tmp_path_factory):
    truth = write_visium_hd(tmp_path_factory.mktemp("visium_hd"))
    sdata = sdio.visium_hd(
        truth.root,
        dataset_id=truth.dataset_id,
        load_segmentations_only=False,
        fullres_image_file=truth.fullres_image_path,
    )
    return truth, sdata


def _by_grid(rows, cols, counts) -> dict:
    return {(int(r), int(c)): np.asarray(v) for r, c, v in zip(rows, cols, counts, strict=True)}


def test_visium_hd_8um_summed_to_16um_equal_space_rangers_16um(visium_hd):
    truth, sdata = visium_hd
    st.pp.aggregate_bins(sdata, 16, table_key="square_008um", key_added="from8")
    ours = sdata.tables["from8_table"]
    native = truth.bins[16]
    expected = _by_grid(native.array_row, native.array_col, native.counts)
    got = _by_grid(ours.obs[K.ARRAY_Y], ours.obs[K.ARRAY_X], ours.X.toarray())
    assert got.keys() == expected.keys()
    for key, values in expected.items():
        np.testing.assert_array_equal(got[key], values)
    # the squares sit where Space Ranger's 16 µm bins are
    centres = {k: xy for k, xy in zip(expected, native.centres_px, strict=True)}
    ours_xy = dict(zip(zip(ours.obs[K.ARRAY_Y].astype(int), ours.obs[K.ARRAY_X].astype(int)), ours.obsm["spatial"]))
    np.testing.assert_allclose(np.array([ours_xy[k] for k in centres]), np.array(list(centres.values())), atol=1e-6)
    meta = ours.uns[K.UNS_SECTIONS][truth.dataset_id]
    assert meta["mpp"] == pytest.approx(truth.mpp, rel=1e-6)
    assert meta["image"] == f"{truth.dataset_id}_full_image"
    # the default source for 16 µm is Space Ranger's own 16 µm table (one bin per square)
    st.pp.aggregate_bins(sdata, 16, key_added="from16")
    assert (sdata.tables["from16_table"].obs["n_bins"] == 1).all()


@pytest.mark.parametrize(("input_size", "level"), [(32, 0), (16, 1)])
def test_visium_hd_markers_under_their_squares(visium_hd, input_size, level):
    truth, sdata = visium_hd
    if "HD1_bins_16um_table" not in sdata.tables:
        st.pp.aggregate_bins(sdata, 16)
    table = sdata.tables["HD1_bins_16um_table"]
    green, info = _green(sdata, "HD1_bins_16um_table", tile_um=16, input_size=input_size)
    assert info["level"] == {truth.dataset_id: level}
    native = truth.bins[16]
    marked_grid = {(int(native.array_row[i]), int(native.array_col[i])) for i in truth.marker_bins[16]}
    grid = list(zip(table.obs[K.ARRAY_Y].astype(int), table.obs[K.ARRAY_X].astype(int)))
    marked = np.array([g in marked_grid for g in grid])
    assert marked.sum() == len(marked_grid) > 0
    assert green[marked].min() > 0.5 and green[~marked].max() < 0.1


def test_visium_hd_fit_predict_at_32um(visium_hd, tiny_fit_kw):
    _, sdata = visium_hd
    st.pp.aggregate_bins(sdata, 32, key_added="b32")
    _fit_predict(sdata, "b32_table", tiny_fit_kw)


def test_visium_hd_bin_size_not_a_multiple(visium_hd):
    _, sdata = visium_hd
    before = (set(sdata.tables), set(sdata.shapes))
    for size in (12, 20, 2):
        with pytest.raises(ValueError, match="not a multiple"):
            st.pp.aggregate_bins(sdata, size)
    assert (set(sdata.tables), set(sdata.shapes)) == before


# ---------------------------------------------------------------------------------------------------------------------
# Xenium: cells into pseudo-spots over the aligned H&E


@pytest.fixture(scope="module")
def xenium(tmp_path_factory):
    truth = write_xenium(tmp_path_factory.mktemp("xenium"))
    sdata = sdio.xenium(
        truth.root,
        cells_boundaries=False,
        nucleus_boundaries=False,
        cells_labels=False,
        nucleus_labels=False,
        transcripts=False,
        morphology_mip=False,
        morphology_focus=False,
        cells_as_circles=True,
        aligned_images=True,
    )
    st.pp.aggregate_cells(sdata, "he_image", spacing_um=40)
    return truth, sdata


def test_xenium_cells_summed_through_the_alignment(xenium):
    truth, sdata = xenium
    table = sdata.tables["he_cells_40um_table"]
    meta = table.uns[K.UNS_SECTIONS]["he"]
    assert meta["mpp"] == pytest.approx(truth.he_mpp, rel=1e-6)  # the alignment's scale (cells are in µm)
    # expected from the written truth: cells (µm) -> morphology pixels -> H&E pixels by the inverse alignment
    morph = np.c_[truth.cells_um / truth.pixel_size, np.ones(len(truth.cells_um))]
    he_px = (morph @ np.linalg.inv(truth.alignment).T)[:, :2]
    centres = table.obsm[K.SPATIAL_KEY]
    inside = np.linalg.norm(he_px[:, None] - centres[None], axis=2) <= 20 / truth.he_mpp
    np.testing.assert_array_equal(table.obs["n_cells"].to_numpy(), inside.sum(0))
    np.testing.assert_allclose(table.X.toarray(), inside.T.astype(float) @ truth.counts)
    assert 0.5 * len(truth.cells_um) < inside.any(1).sum() <= len(truth.cells_um)
    # ignoring the alignment (H&E pixels taken as morphology pixels) would place the cells elsewhere
    wrong = np.linalg.norm(morph[:, None, :2] - centres[None], axis=2) <= 20 / truth.he_mpp
    assert not np.array_equal(wrong.sum(0), inside.sum(0))


@pytest.mark.parametrize(("input_size", "level"), [(80, 0), (38, 1)])
def test_xenium_markers_under_their_spots(xenium, input_size, level):
    truth, sdata = xenium
    green, info = _green(sdata, "he_cells_40um_table", tile_um=40, input_size=input_size)
    assert info["level"] == {"he": level}
    centres = sdata.tables["he_cells_40um_table"].obsm[K.SPATIAL_KEY]
    half_tile, half_marker = 20 / truth.he_mpp, truth.marker_size_um / truth.he_mpp / 2
    for m in truth.marker_he_px:
        d = np.abs(centres - m).max(1)  # the tiles are axis-aligned squares in H&E pixels
        if d.min() < half_tile - half_marker:  # the spot whose tile holds the whole marker
            assert green[np.argmin(d)] > 0.5
    far = np.array([np.abs(c - truth.marker_he_px).max(1).min() > half_tile + half_marker + 2 for c in centres])
    assert far.any() and green[far].max() < 0.1


def test_xenium_fit_predict(xenium, tiny_fit_kw):
    _, sdata = xenium
    _fit_predict(sdata, "he_cells_40um_table", tiny_fit_kw)
