import numpy as np
import pytest
from pp_helpers import Identity, _snapshot, expected_tile, make_sdata, pattern

import sthinge as st

N = 32  # identity-encoder tile size
TILE_UM = 112.0


def _tiles(table, key="X_Identity"):
    return table.obsm[key].reshape(-1, 3, N, N)


@pytest.mark.parametrize("mpp", [0.5, 1.3])
def test_tile_geometry_known_pattern(mpp):
    """The tile at a spot holds the pattern under that spot, at the right physical scale, for two mpp values."""
    size_um = 700.0
    n_px = int(size_um / mpp)
    img = pattern(n_px, n_px, mpp)
    spots_um = np.array([[200.0, 230.0], [333.0, 410.0], [500.0, 160.0]])
    sdata = make_sdata(img, spots_um / mpp, mpp)  # multiscale: level chosen by resolution
    st.pp.embed_histology(sdata, encoder=Identity(), input_size=N, transform=lambda x: x, tile_size_um=TILE_UM)
    tiles = _tiles(sdata.tables["table"])
    for tile, (cx, cy) in zip(tiles, spots_um):
        exp = expected_tile(cx, cy, TILE_UM, N)
        assert np.abs(tile[:2] - exp[:2]).mean() < 0.03, np.abs(tile - exp).mean()
        # a 10 % scale error or a 5 µm shift is clearly detected
        wrong = expected_tile(cx, cy, TILE_UM * 1.1, N)
        assert np.abs(tile[:2] - wrong[:2]).mean() > 0.06
        shifted = expected_tile(cx + 5, cy, TILE_UM, N)
        assert np.abs(tile[0] - shifted[0]).mean() > 0.05
    level = sdata.tables["table"].uns["X_Identity"]["level"]["A"]
    assert level == (2 if mpp == 0.5 else 1)  # the coarsest level on which the tile is still >= 32 px


def test_transformed_shapes_and_visium_anndata_agree():
    """Shapes in a different pixel space (scale transformation) and scanpy's Visium layout give the same tiles."""
    import anndata as ad
    from spatialdata.transformations import Identity as Id
    from spatialdata.transformations import Scale, set_transformation

    mpp_full = 0.5
    img_full = pattern(1400, 1400, mpp_full)
    spots_full = np.array([[400.0, 460.0], [700.0, 820.0]])
    # image stored at half resolution; shapes in full-resolution pixels, image scaled x2 into the same system
    half = img_full[::2, ::2]
    sdata = make_sdata(half, spots_full / 2, mpp_full * 2, scale_factors=())
    shapes = sdata.shapes["A_spots"]
    shapes.geometry = shapes.geometry.scale(2.0, 2.0, origin=(0, 0))
    shapes["radius"] = shapes["radius"] * 2
    set_transformation(shapes, Id(), to_coordinate_system="A")
    set_transformation(sdata.images["A_image"], Scale([2.0, 2.0], axes=("x", "y")), to_coordinate_system="A")
    table = sdata.tables["table"]
    table.uns["sthinge_sections"]["A"]["mpp"] = mpp_full  # µm per unit of the spot coordinates
    st.pp.embed_histology(sdata, encoder=Identity(), input_size=N, transform=lambda x: x)
    tiles_sd = _tiles(table)
    for tile, (cx, cy) in zip(tiles_sd, spots_full * mpp_full):
        assert np.abs(tile[:2] - expected_tile(cx, cy, TILE_UM, N)[:2]).mean() < 0.04

    # scanpy Visium layout: hires image (scalef 0.5), float in [0, 1], 55 µm spots
    adata = ad.AnnData(np.zeros((2, 1), dtype=np.float32))
    adata.obsm["spatial"] = spots_full
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": half.astype(np.float32) / 255},
            "scalefactors": {"tissue_hires_scalef": 0.5, "spot_diameter_fullres": 55.0 / mpp_full},
        }
    }
    st.pp.embed_histology(adata, encoder=Identity(), input_size=N, transform=lambda x: x)
    np.testing.assert_allclose(_tiles(adata), tiles_sd, atol=0.02)
    assert adata.uns["X_Identity"]["mpp_source"]["all"] == "spot diameter / shape radius"


@pytest.fixture
def small():
    return st.datasets.synthetic(n_sections=1, n_spots=49, n_genes=10, seed=1)


def test_he_stats_default_and_copy(small):
    sdata = small
    before = _snapshot(sdata)
    out = st.pp.embed_histology(sdata, copy=True)  # a copy of the SpatialData, with the embedding
    assert type(out) is type(sdata) and out is not sdata
    x = out.tables["table"].obsm["X_he-stats"]
    assert x.dtype == np.float32 and x.shape == (sdata.tables["table"].n_obs, 104)
    assert np.isfinite(x).all() and (x.std(0) > 0).sum() > 70
    assert len(out.tables["table"].uns["X_he-stats"]["feature_names"]) == 104
    assert _snapshot(sdata) == before
    assert st.pp.embed_histology(sdata, key_added="emb", batch_size=30, num_workers=1) is None
    np.testing.assert_allclose(sdata.tables["table"].obsm["emb"], x, rtol=1e-4, atol=1e-4)


def test_he_stats_track_stains(small):
    """he-stats haematoxylin means follow the synthetic stain field under the spots."""
    sdata = small
    st.pp.embed_histology(sdata)
    table = sdata.tables["table"]
    names = table.uns["X_he-stats"]["feature_names"]
    x, f = table.obsm["X_he-stats"], table.obsm["synthetic_factors"]
    r_h = np.corrcoef(x[:, names.index("H_mean_disc")], f[:, 0])[0, 1]
    assert r_h > 0.6


def test_timm_random_and_user_module():
    import torch

    small = make_sdata(pattern(300, 300, 1.0), np.array([[150.0, 150.0]]), 1.0)
    with pytest.warns(UserWarning, match="RANDOM"):
        st.pp.embed_histology(small, encoder="vit_tiny_patch16_224", weights="random", device="cpu")
    assert small.tables["table"].obsm["X_vit_tiny_patch16_224"].shape == (1, 192)
    with pytest.raises(ValueError, match="weights"):
        st.pp.embed_histology(small, encoder="vit_tiny_patch16_224")
    mod = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    st.pp.embed_histology(small, encoder=mod, input_size=16, key_added="pool")
    assert small.tables["table"].obsm["pool"].shape == (1, 3)


def test_amp_runs_the_encoder_in_bfloat16_and_never_he_stats():
    """``amp=True`` autocasts a neural encoder (its matmuls run in bfloat16: features close to float32's but not
    equal); he-stats stays exact; the dtype is recorded."""
    import torch

    small = make_sdata(pattern(300, 300, 1.0), np.array([[100.0, 100.0], [200.0, 180.0]]), 1.0)
    seen = []

    class Probe(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(3, 8)

        def forward(self, x):
            out = self.lin(x.mean((2, 3)))
            seen.append(out.dtype)
            return out

    torch.manual_seed(0)
    mod = Probe()
    st.pp.embed_histology(small, encoder=mod, input_size=16, key_added="f32", device="cpu")
    assert seen[-1] == torch.float32  # the tiles' batch (a probe for the output size may come first)
    st.pp.embed_histology(small, encoder=mod, input_size=16, key_added="amp", device="cpu", amp=True)
    assert seen[-1] == torch.bfloat16
    table = small.tables["table"]
    assert table.uns["f32"]["amp"] is None and table.uns["amp"]["amp"] == "bfloat16"
    assert table.obsm["amp"].dtype == np.float32
    np.testing.assert_allclose(table.obsm["amp"], table.obsm["f32"], rtol=0.05, atol=0.02)
    assert not np.array_equal(table.obsm["amp"], table.obsm["f32"])
    st.pp.embed_histology(small, key_added="hs32", device="cpu")
    st.pp.embed_histology(small, key_added="hsamp", device="cpu", amp=True)
    np.testing.assert_array_equal(table.obsm["hs32"], table.obsm["hsamp"])
    with pytest.raises(TypeError, match="`amp`"):
        st.pp.embed_histology(small, key_added="bad", amp="yes")


def _bad_calls(sdata):
    yield {"encoder": "not-an-encoder"}, ValueError, "encoder"
    yield {"encoder": 3}, TypeError, "encoder"
    yield {"tile_size_um": "big"}, TypeError, "tile_size_um"
    yield {"tile_size_um": -1.0}, ValueError, "tile_size_um"
    yield {"batch_size": 0}, ValueError, "batch_size"
    yield {"device": "tpu"}, ValueError, "device"
    yield {"encoder": "uni"}, ValueError, "weights"
    yield {"encoder": "uni", "weights": "/nonexistent/pytorch_model.bin"}, FileNotFoundError, "weights"
    yield {"encoder": "uni+conch", "weights": "x.bin"}, TypeError, "weights"
    yield {"image_key": "nope"}, KeyError, "image_key"
    yield {"table_key": "nope"}, KeyError, "table_key"


def test_bad_arguments_leave_object_unchanged(sdata):
    before = _snapshot(sdata)
    for kwargs, err, match in _bad_calls(sdata):
        with pytest.raises(err, match=match):
            st.pp.embed_histology(sdata, **kwargs)
        assert _snapshot(sdata) == before, kwargs
    with pytest.raises(TypeError, match="data"):
        st.pp.embed_histology({"not": "data"})


def test_spots_outside_image(sdata):
    table = sdata.tables["table"]
    shapes = sdata.shapes["S2_spots"]
    shapes.geometry = shapes.geometry.translate(5000.0, 0.0)
    before = _snapshot(sdata)
    with pytest.raises(ValueError, match="outside its image"):
        st.pp.embed_histology(sdata)
    assert _snapshot(sdata) == before and "X_he-stats" not in table.obsm


def test_image_without_scale_and_missing_table(sdata):
    from spatialdata import SpatialData

    table = sdata.tables["table"]
    del table.uns["sthinge_sections"]
    before = _snapshot(sdata)
    with pytest.raises(ValueError, match="no physical scale"):
        st.pp.embed_histology(sdata)
    assert _snapshot(sdata) == before
    # the shapes' radius and the spot diameter give the scale
    st.pp.embed_histology(
        sdata,
        spot_diameter_um=100.0,
        encoder=Identity(),
        input_size=8,
        key_added="id",
        image_key={"S1": "S1_image", "S2": "S2_image", "S3": "S3_image"},
    )
    mpp = table.uns["id"]["mpp"]
    assert mpp["S1"] == pytest.approx(4.0 * (1 - 0.08), rel=1e-6)
    empty = SpatialData(images=dict(sdata.images))
    with pytest.raises(KeyError, match="no table"):
        st.pp.embed_histology(empty)


def test_anndata_without_image(adata):
    with pytest.raises(ValueError, match="no image"):
        st.pp.embed_histology(adata)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_crops_of_used_batches_are_released(num_workers):
    """With worker threads reading ahead, a batch already handed out is not kept alive (memory stays constant)."""
    import gc
    import weakref

    from sthinge.pp import _tiles

    rng = np.random.default_rng(0)
    image = _tiles.image_levels_from_array("img", rng.integers(0, 255, (200, 200, 3), dtype=np.uint8))
    centres = np.stack(np.meshgrid(np.arange(20, 180, 10), np.arange(20, 180, 40)), -1).reshape(-1, 2).astype(float)
    group = _tiles.SpotGroup("S1", np.arange(len(centres)), centres, 1.0, image, "test")
    refs, alive = [], []
    for _, crops in _tiles.iter_crops(group, 16.0, 16, batch_size=4, num_workers=num_workers):
        refs.append(weakref.ref(crops))
        del crops
        gc.collect()
        alive.append(sum(r() is not None for r in refs))  # batches handed out so far that are still in memory
    assert len(refs) == 16
    assert max(alive) <= 1  # only the batch just handed out may still be referenced by the reader
