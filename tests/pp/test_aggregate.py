"""``pp.aggregate_bins`` (Visium HD bins into larger squares) and ``pp.aggregate_cells`` (cells into pseudo-spots) on
SpatialData objects built here in the layout spatialdata-io's readers give; the folders themselves are read in
``tests/io/test_platforms.py``."""

from __future__ import annotations

import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K

GENES = ["ACTB", "GAPDH", "ERBB2", "KRT8", "VIM", "CD74", "MKI67", "COL1A1"]


def _image(shape=(400, 400), transformations=None):
    from spatialdata.models import Image2DModel

    rng = np.random.default_rng(0)
    img = np.clip(np.array([232, 166, 204])[:, None, None] + rng.integers(-20, 20, (3, *shape)), 0, 255)
    return Image2DModel.parse(img.astype(np.uint8), dims=("c", "y", "x"), transformations=transformations)


def _hd(
    *,
    angle_deg: float = 0.0,
    native_um: float = 8.0,
    mpp: float = 0.5,
    n: int = 20,
    drop: bool = True,
    seed: int = 0,
    region: str = "HD1_square_008um",
    table_key: str = "square_008um",
):
    """A Visium HD-like SpatialData as spatialdata-io's ``visium_hd`` gives it: table 'square_008um' annotating
    squares 'HD1_square_008um' (in full-resolution pixels), the full-resolution image in the same frame."""
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(seed)
    rows, cols = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
    if drop:  # a non-rectangular tissue
        keep = (rows - n / 2) ** 2 + (cols - n / 2) ** 2 < (0.45 * n) ** 2
        rows, cols = rows[keep], cols[keep]
    pitch = native_um / mpp
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    xy = (np.c_[cols, rows] * pitch) @ rot.T + np.array([40.0, 30.0])
    counts = rng.poisson(2.0 + cols[:, None] / n * np.arange(1, len(GENES) + 1), size=(len(rows), len(GENES)))
    circles = ShapesModel.parse(
        xy, geometry=0, radius=np.full(len(xy), pitch / 2), index=pd.Index(np.arange(len(xy)), name="location_id")
    )
    squares = ShapesModel.parse(
        gpd.GeoDataFrame(geometry=circles.buffer(pitch / 2, cap_style=3)),
        transformations={"HD1": Identity()},
    )
    obs = pd.DataFrame(
        {"array_row": rows, "array_col": cols, "location_id": np.arange(len(xy)), "region": region},
        index=[f"s_008um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols)],
    )
    obs["region"] = obs["region"].astype("category")
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))
    table = TableModel.parse(adata, region=region, region_key="region", instance_key="location_id")
    image = _image(transformations={"HD1": Identity()})
    sdata = SpatialData(images={"HD1_full_image": image}, shapes={region: squares}, tables={table_key: table})
    sdata.attrs["spatialdata_io_reader"] = "visium_hd"
    return sdata


def _names(sdata):
    return set(sdata.tables), set(sdata.shapes)


# ---------------------------------------------------------------------------------------------------------------------
# aggregate_bins


def test_bins_sum_blocks_of_the_grid():
    sdata = _hd()
    src = sdata.tables["square_008um"]
    st.pp.aggregate_bins(sdata, 16)
    out = sdata.tables["HD1_bins_16um_table"]
    # expected: sums over blocks of 2 x 2 native bins, by grid index
    rows, cols = src.obs["array_row"].to_numpy(), src.obs["array_col"].to_numpy()
    x = src.X.toarray()
    for (r, c), ni, row in zip(
        out.obs[[K.ARRAY_Y, K.ARRAY_X]].to_numpy(), out.obs["n_bins"], out.X.toarray(), strict=True
    ):
        members = (rows // 2 == r) & (cols // 2 == c)
        assert members.sum() == ni
        np.testing.assert_array_equal(row, x[members].sum(0))
    assert out.X.sum() == x.sum()  # every bin counted once
    assert list(out.var_names) == GENES
    assert out.obs[K.SECTION_KEY].unique().tolist() == ["HD1"]
    meta = out.uns[K.UNS_SECTIONS]["HD1"]
    assert meta["mpp"] == pytest.approx(0.5) and meta["spot_diameter_um"] == 16.0
    assert meta["image"] == "HD1_full_image" and meta["shapes"] == "HD1_bins_16um"
    # squares of 16 µm = 32 px, in the bins' coordinate system
    shapes = sdata.shapes["HD1_bins_16um"]
    np.testing.assert_allclose(shapes.geometry.area.to_numpy(), 32.0**2)
    from spatialdata.transformations import get_transformation

    assert set(get_transformation(shapes, get_all=True)) == {"HD1"}


def test_bins_agree_with_spatialdata_aggregate():
    """The sparse block sums equal spatialdata's own geometric aggregation of the native squares."""
    from spatialdata import aggregate

    sdata = _hd(n=12)
    st.pp.aggregate_bins(sdata, 24)
    ours = sdata.tables["HD1_bins_24um_table"]
    theirs = aggregate(
        values_sdata=sdata,
        values="HD1_square_008um",
        by=sdata.shapes["HD1_bins_24um"],
        value_key=GENES,
        table_name="square_008um",
        agg_func="sum",
        target_coordinate_system="HD1",
        fractions=True,  # touching squares share an edge but no area
    ).tables["square_008um"]
    order = theirs.obs["instance_id"].to_numpy().astype(int)
    x = np.zeros((ours.n_obs, len(GENES)))
    x[order] = theirs[:, GENES].X.toarray()
    np.testing.assert_allclose(x, ours.X.toarray(), rtol=1e-5, atol=1e-4)


def test_bins_follow_a_rotated_grid():
    from shapely.geometry import Point

    sdata = _hd(angle_deg=7.0)
    src = sdata.tables["square_008um"]
    st.pp.aggregate_bins(sdata, 32)
    out, shapes = sdata.tables["HD1_bins_32um_table"], sdata.shapes["HD1_bins_32um"]
    native = sdata.shapes["HD1_square_008um"].geometry.centroid
    rows, cols = src.obs["array_row"].to_numpy(), src.obs["array_col"].to_numpy()
    for i, (r, c) in enumerate(out.obs[[K.ARRAY_Y, K.ARRAY_X]].to_numpy()):
        members = np.flatnonzero((rows // 4 == r) & (cols // 4 == c))
        poly = shapes.geometry.iloc[i]
        assert all(poly.contains(Point(native.iloc[j].x, native.iloc[j].y)) for j in members)
    np.testing.assert_allclose(shapes.geometry.area.to_numpy(), 64.0**2)


def test_bins_end_to_end(one_thread, tiny_fit_kw):
    sdata = _hd(n=24)
    st.pp.aggregate_bins(sdata, 32)
    key = "HD1_bins_32um_table"
    st.pp.normalize(sdata, table_key=key)
    st.pp.select_genes(sdata, table_key=key, n_top=len(GENES), vocab="cellfm-80m")
    st.pp.embed_histology(sdata, table_key=key, tile_size_um=32, batch_size=64)
    table = sdata.tables[key]
    assert table.uns["X_he-stats"]["image"] == {"HD1": "HD1_full_image"}
    assert table.uns["X_he-stats"]["mpp"]["HD1"] == pytest.approx(0.5)
    model = st.tl.fit(sdata, table_key=key, **{**tiny_fit_kw, "batch_size": 8})
    st.tl.predict(sdata, model, table_key=key, n_steps=2, n_samples=2)
    assert sdata.tables[K.PRED_KEY].shape == (table.n_obs, len(model.genes))


@pytest.mark.parametrize("size", [12, 4, 8.5])
def test_bins_bad_size_is_refused_before_writing(size):
    sdata = _hd()
    before = _names(sdata)
    with pytest.raises(ValueError, match="not a multiple"):
        st.pp.aggregate_bins(sdata, size)
    with pytest.raises(ValueError, match="not a multiple of the native bin size 8 µm"):
        st.pp.aggregate_bins(sdata, size, table_key="square_008um")
    assert _names(sdata) == before


def test_bins_choose_the_coarsest_native_table():
    sdata = _hd()
    st.pp.aggregate_bins(sdata, 16)
    sixteen = sdata.tables.pop("HD1_bins_16um_table")  # as Space Ranger's own 16 µm bins
    sixteen.obs["array_row"], sixteen.obs["array_col"] = sixteen.obs[K.ARRAY_Y], sixteen.obs[K.ARRAY_X]
    sdata.tables["square_016um"] = sixteen
    st.pp.aggregate_bins(sdata, 48)  # 16 divides 48: read from the 16 µm table
    assert sdata.tables["HD1_bins_48um_table"].obs["n_bins"].max() <= 9
    st.pp.aggregate_bins(sdata, 40)  # 16 does not divide 40, 8 does
    assert sdata.tables["HD1_bins_40um_table"].obs["n_bins"].max() == 25


def test_bins_bad_input():
    sdata = _hd()
    before = _names(sdata)
    with pytest.raises(TypeError, match="`data` must be a SpatialData"):
        st.pp.aggregate_bins(sdata.tables["square_008um"], 16)
    with pytest.raises(KeyError, match="`table_key` 'nope' not found"):
        st.pp.aggregate_bins(sdata, 16, table_key="nope")
    with pytest.raises(ValueError, match="`bin_size_um` must be > 0"):
        st.pp.aggregate_bins(sdata, 0)
    unnamed = _hd(region="HD1_bins", table_key="bins")
    with pytest.raises(ValueError, match="No Visium HD bin table"):
        st.pp.aggregate_bins(unnamed, 16)
    with pytest.raises(ValueError, match="pass `native_bin_um=`"):
        st.pp.aggregate_bins(unnamed, 16, table_key="bins")
    st.pp.aggregate_bins(unnamed, 16, table_key="bins", native_bin_um=8, section="HD1")
    assert unnamed.tables["HD1_bins_16um_table"].X.sum() == unnamed.tables["bins"].X.sum()
    st.pp.aggregate_bins(sdata, 16)
    with pytest.raises(ValueError, match="already exists; pass `overwrite=True`"):
        st.pp.aggregate_bins(sdata, 16)
    st.pp.aggregate_bins(sdata, 16, overwrite=True)
    with pytest.raises(ValueError, match="names shapes that table 'square_008um' annotates"):
        st.pp.aggregate_bins(sdata, 16, key_added="HD1_square_008um", overwrite=True)
    # grid indices that do not match the positions
    bad = _hd()
    bad.tables["square_008um"].obs["array_col"] = np.random.default_rng(0).permutation(
        bad.tables["square_008um"].obs["array_col"].to_numpy()
    )
    with pytest.raises(ValueError, match="do not lie on the grid"):
        st.pp.aggregate_bins(bad, 16)
    del bad.tables["square_008um"].obs["array_row"]
    with pytest.raises(KeyError, match="array_row"):
        st.pp.aggregate_bins(bad, 16)
    assert _names(sdata) == (before[0] | {"HD1_bins_16um_table"}, before[1] | {"HD1_bins_16um"})


def test_bins_refuse_normalised_values():
    sdata = _hd()
    sdata.tables["square_008um"].X = sdata.tables["square_008um"].X * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        st.pp.aggregate_bins(sdata, 16)


# ---------------------------------------------------------------------------------------------------------------------
# aggregate_cells


XENIUM_PX = 0.2125  # µm per morphology pixel ("global")
HE_MPP = 0.5  # µm per H&E pixel


def _he_to_global(angle_deg: float = 4.0) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    s = HE_MPP / XENIUM_PX
    return np.array([[s * np.cos(a), -s * np.sin(a), 35.0], [s * np.sin(a), s * np.cos(a), -20.0], [0, 0, 1]])


def _xenium(*, n_cells: int = 400, seed: int = 0, reader: str | None = "xenium"):
    """A Xenium-like SpatialData as ``spatialdata_io.xenium(..., cells_as_circles=True)`` gives it: cells as
    circles in µm (Scale 1 / 0.2125 to 'global'), the H&E image aligned to 'global' by a rotated, scaled affine."""
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Affine, Scale

    rng = np.random.default_rng(seed)
    he_xy = rng.uniform(40, 360, size=(n_cells, 2))  # where the cells are, in H&E pixels
    glob = np.c_[he_xy, np.ones(n_cells)] @ _he_to_global().T
    um = glob[:, :2] * XENIUM_PX
    counts = rng.poisson(1.0 + he_xy[:, :1] / 400 * np.arange(1, len(GENES) + 1), size=(n_cells, len(GENES)))
    cell_ids = [f"cell{i:04d}" for i in range(n_cells)]
    circles = ShapesModel.parse(
        um,
        geometry=0,
        radius=np.full(n_cells, 4.0),
        index=pd.Index(cell_ids, name="cell_id"),
        transformations={"global": Scale([1 / XENIUM_PX, 1 / XENIUM_PX], axes=("x", "y"))},
    )
    obs = pd.DataFrame({"cell_id": cell_ids, "region": "cell_circles"}, index=[str(i) for i in range(n_cells)])
    obs["region"] = obs["region"].astype("category")
    adata = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)), obs=obs, var=pd.DataFrame(index=GENES))
    table = TableModel.parse(adata, region="cell_circles", region_key="region", instance_key="cell_id")
    he = _image(transformations={"global": Affine(_he_to_global(), input_axes=("x", "y"), output_axes=("x", "y"))})
    sdata = SpatialData(images={"he_image": he}, shapes={"cell_circles": circles}, tables={"table": table})
    if reader:
        sdata.attrs["spatialdata_io_reader"] = reader
    return sdata, he_xy, counts


def test_cells_are_summed_into_the_spots_they_fall_in():
    sdata, he_xy, counts = _xenium()
    st.pp.aggregate_cells(sdata, "he_image", spacing_um=40)
    out = sdata.tables["he_cells_40um_table"]
    meta = out.uns[K.UNS_SECTIONS]["he"]
    assert meta["mpp"] == pytest.approx(HE_MPP)  # from the alignment's scale, cells being in µm
    step = 40 / HE_MPP  # 80 H&E pixels
    centres = out.obsm[K.SPATIAL_KEY]
    np.testing.assert_allclose(centres, np.c_[out.obs[K.ARRAY_X], out.obs[K.ARRAY_Y]] * step + step / 2)
    # expected, from the cells' H&E positions (never seen by the function)
    d = np.linalg.norm(he_xy[:, None, :] - centres[None, :, :], axis=2)
    inside = d <= step / 2
    assert (inside.sum(1) <= 1).all()
    np.testing.assert_array_equal(out.obs["n_cells"].to_numpy(), inside.sum(0))
    np.testing.assert_allclose(out.X.toarray(), inside.T.astype(float) @ counts)
    assert (out.obs["n_cells"] >= 1).all()
    # the circles, in the image's coordinate system
    shapes = sdata.shapes["he_cells_40um"]
    np.testing.assert_allclose(shapes["radius"].to_numpy(), step / 2)


def test_cells_min_cells_and_diameter():
    sdata, he_xy, _ = _xenium()
    st.pp.aggregate_cells(sdata, "he_image", spacing_um=40, spot_diameter_um=20, min_cells=2, key_added="small")
    out = sdata.tables["small_table"]
    assert (out.obs["n_cells"] >= 2).all()
    d = np.linalg.norm(he_xy[:, None, :] - out.obsm[K.SPATIAL_KEY][None, :, :], axis=2)
    np.testing.assert_array_equal(out.obs["n_cells"].to_numpy(), (d <= 20).sum(0))


def test_cells_without_known_scale_need_mpp():
    sdata, _, _ = _xenium(reader=None)
    before = _names(sdata)
    with pytest.raises(ValueError, match="pass `mpp=`"):
        st.pp.aggregate_cells(sdata, "he_image")
    assert _names(sdata) == before
    st.pp.aggregate_cells(sdata, "he_image", mpp=HE_MPP, spacing_um=40)
    assert sdata.tables["he_cells_40um_table"].n_obs > 0


def test_cells_shapes_in_another_coordinate_system_are_refused():
    from spatialdata.transformations import Identity, set_transformation

    sdata, _, _ = _xenium()
    set_transformation(sdata.shapes["cell_circles"], {"elsewhere": Identity()}, set_all=True)
    before = _names(sdata)
    with pytest.raises(ValueError, match="share no coordinate system"):
        st.pp.aggregate_cells(sdata, "he_image")
    assert _names(sdata) == before


def test_cells_bad_input():
    sdata, _, _ = _xenium()
    before = _names(sdata)
    with pytest.raises(KeyError, match="`image_key` 'nope' not found"):
        st.pp.aggregate_cells(sdata, "nope")
    with pytest.raises(KeyError, match="`table_key` 'nope' not found"):
        st.pp.aggregate_cells(sdata, "he_image", table_key="nope")
    with pytest.raises(ValueError, match="`min_cells` must be >= 1"):
        st.pp.aggregate_cells(sdata, "he_image", min_cells=0)
    with pytest.raises(ValueError, match="`spacing_um` must be > 0"):
        st.pp.aggregate_cells(sdata, "he_image", spacing_um=-1)
    with pytest.raises(ValueError, match="`table_key_added` and `key_added` are both"):
        st.pp.aggregate_cells(sdata, "he_image", key_added="x", table_key_added="x")
    assert _names(sdata) == before
    # cells far off the image
    far, _, _ = _xenium()
    shapes = far.shapes["cell_circles"]
    shapes.geometry = shapes.geometry.translate(1e5, 1e5)
    with pytest.raises(ValueError, match="No pseudo-spot"):
        st.pp.aggregate_cells(far, "he_image", spacing_um=40)
