import numpy as np
import pytest
from pp_helpers import _snapshot

import sthinge as st


def test_grid_over_tissue_then_embed(sdata):
    st.pp.make_grid(sdata, "S1_image", spacing_um=180.0)
    assert "S1_grid" in sdata.shapes and "S1_grid_table" in sdata.tables
    table = sdata.tables["S1_grid_table"]
    assert table.n_vars == 0 and table.n_obs > 10
    meta = table.uns["sthinge_sections"]["S1"]
    assert meta["image"] == "S1_image" and meta["shapes"] == "S1_grid"
    assert meta["mpp"] == pytest.approx(sdata.tables["table"].uns["sthinge_sections"]["S1"]["mpp"])
    xy = table.obsm["spatial"]
    step = np.diff(np.unique(xy[:, 0]))
    np.testing.assert_allclose(step, 180.0 / meta["mpp"])
    # the synthetic tissue is a rounded square: the corners (background) get no pseudo-spot
    full = st.pp.make_grid(sdata, "S1_image", spacing_um=180.0, tissue_only=False, inplace=False)
    assert full.tables["S1_grid_table"].n_obs > table.n_obs
    st.pp.embed_histology(sdata, table_key="S1_grid_table", encoder="he-stats", batch_size=128)
    assert table.obsm["X_he-stats"].shape == (table.n_obs, 104)


def test_grid_not_inplace_and_errors(sdata):
    before = _snapshot(sdata)
    out = st.pp.make_grid(sdata, "S2_image", spacing_um=200.0, spot_diameter_um=55.0, inplace=False, key_added="g")
    assert _snapshot(sdata) == before and "g" not in sdata.shapes
    assert set(out.shapes) == {"g"} and set(out.tables) == {"g_table"} and set(out.images) == {"S2_image"}
    named = st.pp.make_grid(sdata, "S2_image", spacing_um=200.0, inplace=False, table_key_added="g_spots")
    assert set(named.shapes) == {"S2_grid"} and set(named.tables) == {"g_spots"}
    mpp = out.tables["g_table"].uns["sthinge_sections"]["S2"]["mpp"]
    assert out.shapes["g"]["radius"].iloc[0] == pytest.approx(27.5 / mpp)
    with pytest.raises(KeyError, match="image_key"):
        st.pp.make_grid(sdata, "nope")
    with pytest.raises(ValueError, match="spacing_um"):
        st.pp.make_grid(sdata, "S1_image", spacing_um=0.0)
    with pytest.raises(TypeError, match="data"):
        st.pp.make_grid(sdata.tables["table"], "S1_image")
    del sdata.tables["table"]
    with pytest.raises(ValueError, match="mpp"):
        st.pp.make_grid(sdata, "S1_image")
    assert "S1_grid" not in sdata.shapes


def test_grid_removed_keywords_name_their_replacement(sdata):
    """`table_key` (the table read, everywhere else) and `copy` are refused with the new name, before any work."""
    before = _snapshot(sdata)
    with pytest.raises(TypeError, match="table_key_added"):
        st.pp.make_grid(sdata, "S1_image", table_key="t")
    with pytest.raises(TypeError, match="inplace=False"):
        st.pp.make_grid(sdata, "S1_image", copy=True)
    with pytest.raises(TypeError, match="inplace"):
        st.pp.make_grid(sdata, "S1_image", inplace="no")
    assert _snapshot(sdata) == before


def test_tissue_mask_of_a_large_single_level_image_is_read_strided(monkeypatch):
    """An image whose coarsest level is above the detection size is read every n-th pixel (never whole), with the
    factors scaled to match: the same grid points fall on tissue as when the level is small enough."""
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel

    from sthinge.pp import _grid
    from sthinge.pp._tiles import image_levels_from_element

    yy, xx = np.mgrid[0:300, 0:400]
    tissue = (yy - 150) ** 2 + (xx - 200) ** 2 < 110**2
    img = np.where(tissue[None], np.array([200, 120, 180])[:, None, None], 240).astype(np.uint8)
    element = Image2DModel.parse(img, dims=("c", "y", "x"), chunks=(3, 64, 64))
    sdata = SpatialData(images={"w_image": element})
    st.pp.make_grid(sdata, "w_image", spacing_um=20, mpp=1.0, key_added="full")
    monkeypatch.setattr(_grid, "_TISSUE_MAX_SIDE", 64)
    mask, (fy, fx) = _grid.tissue_mask(image_levels_from_element("w_image", element), min_area_px0=0.0)
    assert max(mask.shape) <= 64 and fy == fx == 7  # ceil(400 / 64)
    st.pp.make_grid(sdata, "w_image", spacing_um=20, mpp=1.0, key_added="strided")
    a = {tuple(p) for p in sdata.tables["full_table"].obsm["spatial"]}
    b = {tuple(p) for p in sdata.tables["strided_table"].obsm["spatial"]}
    assert len(a ^ b) <= 0.1 * len(a)  # the same points, up to the disc's edge
    centre = np.array([200.0, 150.0])
    assert all(np.linalg.norm(np.array(p) - centre) < 125 for p in b)  # none far off the tissue
