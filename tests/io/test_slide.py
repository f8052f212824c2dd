"""``io.read_slide``: pyramidal (OME-)TIFF slides written here with tifffile, read lazily as multiscale images."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

import sthinge as st

tifffile = pytest.importorskip("tifffile")  # comes with tiffslide

MPP = 0.5
PINK = (232, 166, 204)  # eosin-like background: the marker test's "tissue"
GREEN = (0, 255, 0)  # the marker
MARKER_UM = (220.0, 120.0)  # centre of the marker square (x, y), µm from the top-left corner of the slide
MARKER_SIDE_UM = 40.0


def _pyramid(level0: np.ndarray, n_levels: int = 3) -> list[np.ndarray]:
    """Level k is level 0 subsampled by 2**k (exactly, so the values at every level are known)."""
    levels = [level0]
    for _ in range(n_levels - 1):
        levels.append(np.ascontiguousarray(levels[-1][::2, ::2]))
    return levels


def _noise(h: int = 768, w: int = 1024, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, channels), dtype=np.uint8)


def _write(path, levels, *, ome: bool = True, mpp: float | None = MPP, unit: str = "µm", **kwargs):
    """A tiled pyramidal TIFF: level 0 with its sub-resolutions in SubIFDs (the OME-TIFF pyramid layout)."""
    metadata = {"axes": "YXS" if levels[0].ndim == 3 else "YX"}
    if ome and mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit=unit, PhysicalSizeY=mpp, PhysicalSizeYUnit=unit)
    photometric = "rgb" if levels[0].ndim == 3 else "minisblack"
    options = {"tile": (256, 256), "photometric": photometric, "compression": "zlib", **kwargs}
    with tifffile.TiffWriter(path, bigtiff=False, ome=ome) as tif:
        tif.write(levels[0], subifds=len(levels) - 1, metadata=metadata if ome else None, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return path


def _marker_slide(path):
    """Pink 1024 x 768 slide at 0.5 µm/px with a green square of 40 µm centred at MARKER_UM."""
    img = np.empty((768, 1024, 3), dtype=np.uint8)
    img[:] = PINK
    (cx, cy), half = MARKER_UM, MARKER_SIDE_UM / 2
    img[int((cy - half) / MPP) : int((cy + half) / MPP), int((cx - half) / MPP) : int((cx + half) / MPP)] = GREEN
    return _write(path, _pyramid(img))


def _level(sdata, key: str, k: int):
    return sdata.images[key][f"scale{k}"]["image"]


# ---------------------------------------------------------------------------------------------------------------------
# 1. an OME-TIFF pyramid


def test_ome_pyramid_levels_values_lazy_and_mpp(tmp_path):
    import dask.array as da
    from spatialdata.models import Image2DModel, get_model

    levels = _pyramid(_noise())
    path = _write(tmp_path / "case 1.ome.tif", levels)
    sdata = st.io.read_slide(path, chunks=256)

    assert list(sdata.images) == ["case_1"]  # the stem without ".ome", made a valid element name
    tree = sdata.images["case_1"]
    assert get_model(tree) is Image2DModel
    Image2DModel().validate(tree)
    assert list(tree.children) == ["scale0", "scale1", "scale2"]
    for k, written in enumerate(levels):
        arr = _level(sdata, "case_1", k)
        assert arr.dims == ("c", "y", "x") and list(arr.coords["c"].values) == ["r", "g", "b"]
        assert arr.shape == (3, *written.shape[:2]) == (3, 768 // 2**k, 1024 // 2**k)
        assert arr.dtype == np.uint8
        assert isinstance(arr.data, da.Array)
        np.testing.assert_array_equal(arr.data.compute(), np.moveaxis(written, -1, 0))
    # lazy: level 0 is 3 x 4 chunks of 256 px read from the file on demand, not an array held in memory
    lazy = _level(sdata, "case_1", 0).data
    assert lazy.numblocks == (1, 3, 4)
    assert any(name.startswith(("from-zarr", "original-array")) for name in lazy.dask.layers)
    corner = lazy[:, :10, :10]
    assert corner.numblocks == (1, 1, 1)
    np.testing.assert_array_equal(corner.compute(), np.moveaxis(levels[0][:10, :10], -1, 0))

    assert sdata.attrs["sthinge_slides"]["case_1"] == {
        "mpp": pytest.approx(MPP),
        "mpp_source": "metadata",
        "path": str(path.resolve()),
    }


def test_default_chunks_are_whole_tiles_and_options(tmp_path):
    from spatialdata.transformations import get_transformation

    path = _write(tmp_path / "s.tif", _pyramid(_noise(600, 1100)))
    sdata = st.io.read_slide(path, image_key="S1_image")
    arr = _level(sdata, "S1_image", 0).data
    assert arr.chunks[1:] == ((600,), (1024, 76))  # 1024 px: whole 256 px tiles, cut at the edges of the level
    # the section name that make_grid derives from image_key is the coordinate system
    assert list(get_transformation(sdata.images["S1_image"], get_all=True)) == ["S1"]
    other = st.io.read_slide(path, image_key="x", coordinate_system="global")
    assert list(get_transformation(other.images["x"], get_all=True)) == ["global"]


def test_units_resolution_tags_and_alpha(tmp_path, sthinge_log):
    # OME unit other than µm
    sdata = st.io.read_slide(_write(tmp_path / "nm.ome.tif", _pyramid(_noise(256, 256), 2), mpp=250.0, unit="nm"))
    assert sdata.attrs["sthinge_slides"]["nm"]["mpp"] == pytest.approx(0.25)
    # a plain TIFF with resolution tags per centimetre: 20,000 px/cm = 0.5 µm/px
    plain = _write(
        tmp_path / "cm.tif",
        _pyramid(_noise(256, 256), 2),
        ome=False,
        resolution=(2e4, 2e4),
        resolutionunit="CENTIMETER",
    )
    assert st.io.read_slide(plain).attrs["sthinge_slides"]["cm"]["mpp"] == pytest.approx(MPP)
    # RGBA: the alpha channel is dropped
    rgba = _pyramid(_noise(256, 256, channels=4), 2)
    sdata = st.io.read_slide(_write(tmp_path / "rgba.ome.tif", rgba, extrasamples=["unassalpha"]))
    for k, written in enumerate(rgba):
        np.testing.assert_array_equal(_level(sdata, "rgba", k).data.compute(), np.moveaxis(written[..., :3], -1, 0))
    # `mpp=` wins over the metadata, with a warning when they differ by more than 1 %
    path = tmp_path / "rgba.ome.tif"
    assert st.io.read_slide(path, mpp=0.502).attrs["sthinge_slides"]["rgba"]["mpp_source"] == "argument"
    assert not [r for r in sthinge_log.records if "differs" in r.getMessage()]
    record = st.io.read_slide(path, mpp=0.6).attrs["sthinge_slides"]["rgba"]
    assert record["mpp"] == 0.6 and record["mpp_source"] == "argument"
    assert [r for r in sthinge_log.records if r.levelno == logging.WARNING and "differs" in r.getMessage()]


# ---------------------------------------------------------------------------------------------------------------------
# 2. a marker at a known µm position lands on the grid spot nearest it, at every level


def _affine(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    return np.asarray(get_transformation(element, cs).to_affine_matrix(("x", "y"), ("x", "y")), dtype=float)


def test_marker_is_under_the_nearest_grid_spot_at_levels_0_and_1(tmp_path):
    from spatialdata.transformations import get_transformation

    sdata = st.io.read_slide(_marker_slide(tmp_path / "marker.ome.tif"))
    key = "marker"
    st.pp.make_grid(sdata, key, spacing_um=32.0, tissue_only=False)  # no `mpp=`: the reader's pixel size is used
    table = sdata.tables["marker_grid_table"]
    assert table.uns["sthinge_sections"]["marker"]["mpp"] == pytest.approx(MPP)

    shapes = sdata.shapes["marker_grid"]
    (cs,) = get_transformation(sdata.images[key], get_all=True)
    xy = np.c_[shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy(), np.ones(len(shapes))]
    xy_cs = (xy @ _affine(shapes, cs).T)[:, :2]  # spot centres in the coordinate system: level-0 pixels
    mpp = sdata.attrs["sthinge_slides"][key]["mpp"]
    nearest = xy_cs[np.argmin(np.linalg.norm(xy_cs * mpp - np.asarray(MARKER_UM), axis=1))]
    assert np.linalg.norm(nearest * mpp - np.asarray(MARKER_UM)) < 32.0  # within one grid spacing

    for k in (0, 1):
        level = _level(sdata, key, k)
        col, row = (np.linalg.inv(_affine(level, cs)) @ np.r_[nearest, 1.0])[:2]
        pixel = level.data[:, int(np.floor(row)), int(np.floor(col))].compute()
        assert tuple(pixel) == GREEN, f"level {k}: pixel ({col:.1f}, {row:.1f}) is {tuple(pixel)}"
    # the scale matters: level-0 pixel coordinates read on level 1 miss the marker
    col, row = nearest.astype(int)
    assert tuple(_level(sdata, key, 1).data[:, row, col].compute()) == PINK


# ---------------------------------------------------------------------------------------------------------------------
# 3. histology embeddings on that grid


def test_embed_histology_on_the_slide_grid(tmp_path):
    sdata = st.io.read_slide(_marker_slide(tmp_path / "marker.ome.tif"))
    st.pp.make_grid(sdata, "marker", spacing_um=96.0, tissue_only=False)
    st.pp.embed_histology(sdata, encoder="he-stats", table_key="marker_grid_table", batch_size=64)
    table = sdata.tables["marker_grid_table"]
    emb = np.asarray(table.obsm["X_he-stats"])
    assert table.n_obs == 5 * 4 and emb.shape == (table.n_obs, 104)
    assert np.isfinite(emb).all()


# ---------------------------------------------------------------------------------------------------------------------
# 4. bad input


def test_no_pixel_size_needs_mpp(tmp_path):
    path = _write(tmp_path / "bare.tif", _pyramid(_noise(256, 512), 2), ome=False)
    with pytest.raises(ValueError, match=r"no pixel size in its metadata.*`mpp=`") as err:
        st.io.read_slide(path)
    assert str(path) in str(err.value)
    sdata = st.io.read_slide(path, mpp=0.25)
    assert sdata.attrs["sthinge_slides"]["bare"] == {
        "mpp": 0.25,
        "mpp_source": "argument",
        "path": str(path.resolve()),
    }
    st.pp.make_grid(sdata, "bare", spacing_um=16.0, tissue_only=False)
    np.testing.assert_allclose(np.diff(np.unique(sdata.tables["bare_grid_table"].obsm["spatial"][:, 0])), 16 / 0.25)


def test_screen_resolution_is_not_a_pixel_size(tmp_path):
    # what image software writes by default: 72 dpi, i.e. 352.8 µm per pixel
    path = _write(
        tmp_path / "dpi.tif", _pyramid(_noise(256, 256), 2), ome=False, resolution=(72, 72), resolutionunit="INCH"
    )
    with pytest.raises(ValueError, match=r"72 dpi.*`mpp=`"):
        st.io.read_slide(path)


def test_truncated_or_not_a_tiff(tmp_path):
    path = _write(tmp_path / "cut.ome.tif", _pyramid(_noise()))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=re.escape(repr(str(path))) + ".*cannot be read as a slide"):
        st.io.read_slide(path)
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(ValueError, match=re.escape(repr(str(text))) + ".*cannot be read as a slide"):
        st.io.read_slide(text, mpp=0.5)


def test_bad_paths_and_arguments(tmp_path):
    path = _write(tmp_path / "ok.ome.tif", _pyramid(_noise(256, 256), 2))
    with pytest.raises(FileNotFoundError, match="`path`.*missing.svs"):
        st.io.read_slide(tmp_path / "missing.svs")
    with pytest.raises(ValueError, match="`path`.*folder"):
        st.io.read_slide(tmp_path)
    with pytest.raises(TypeError, match="`path`"):
        st.io.read_slide(3)
    with pytest.raises(ValueError, match="`mpp`"):
        st.io.read_slide(path, mpp=-1)
    with pytest.raises(ValueError, match="`mpp`"):
        st.io.read_slide(path, mpp=float("nan"))
    with pytest.raises(TypeError, match="`mpp`"):
        st.io.read_slide(path, mpp="0.5")
    with pytest.raises(ValueError, match="`image_key`"):
        st.io.read_slide(path, image_key="a/b")
    with pytest.raises(TypeError, match="`image_key`"):
        st.io.read_slide(path, image_key=1)
    with pytest.raises(ValueError, match="`chunks`"):
        st.io.read_slide(path, chunks=0)
    with pytest.raises(TypeError):
        st.io.read_slide(path, 0.5)  # options are keyword-only
    # the arguments are checked before the file: a bad `mpp` is named even for a missing file
    with pytest.raises(ValueError, match="`mpp`"):
        st.io.read_slide(tmp_path / "missing.svs", mpp=0)


def test_not_an_rgb_slide(tmp_path):
    grey = _write(tmp_path / "grey.ome.tif", _pyramid(_noise(256, 256)[..., 0], 2))
    with pytest.raises(ValueError, match=re.escape(repr(str(grey))) + ".*not an RGB slide: 1 channel"):
        st.io.read_slide(grey)
    wide = _pyramid(np.zeros((256, 256, 3), dtype=np.uint16), 2)
    deep = _write(tmp_path / "deep.ome.tif", wide)
    with pytest.raises(ValueError, match="uint16"):
        st.io.read_slide(deep)


# ---------------------------------------------------------------------------------------------------------------------
# 5. round trip through .zarr


def test_zarr_round_trip_keeps_the_pixel_size(tmp_path):
    import spatialdata

    sdata = st.io.read_slide(_marker_slide(tmp_path / "marker.ome.tif"))
    sdata.write(tmp_path / "s.zarr")
    back = spatialdata.read_zarr(tmp_path / "s.zarr")
    assert back.attrs["sthinge_slides"] == sdata.attrs["sthinge_slides"]
    for k in range(3):
        np.testing.assert_array_equal(_level(back, "marker", k).data.compute(), _level(sdata, "marker", k).data)
    st.pp.make_grid(back, "marker", spacing_um=64.0, tissue_only=False)  # no `mpp=`, no table: from attrs
    assert back.tables["marker_grid_table"].uns["sthinge_sections"]["marker"]["mpp"] == pytest.approx(MPP)


def test_a_table_record_comes_before_the_slide_record(tmp_path):
    from sthinge.pp._grid import _image_mpp

    sdata = st.io.read_slide(_marker_slide(tmp_path / "marker.ome.tif"))
    assert _image_mpp(sdata, "marker") == pytest.approx(MPP)
    assert _image_mpp(sdata, "other") is None
    st.pp.make_grid(sdata, "marker", spacing_um=64.0, tissue_only=False, mpp=0.4)
    assert _image_mpp(sdata, "marker") == pytest.approx(0.4)  # the grid table's uns["sthinge_sections"] wins
    sdata.attrs["sthinge_slides"]["x"] = {"mpp": float("nan")}
    assert _image_mpp(sdata, "x") is None
