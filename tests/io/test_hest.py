"""``io.read_hest``: a tiny HEST-1k folder written here (pyramidal TIFF, h5ad, metadata JSON), read into sthinge's
layout, with a marker under one spot, an end-to-end run and bad input."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K

tifffile = pytest.importorskip("tifffile")  # comes with tiffslide

ID = "TENX1"
MPP = 1.0  # µm per pixel of the slide
DIAMETER_UM = 55.0
H, W = 500, 600  # level-0 size of the slide (pixels)
N_ROWS, N_COLS, STEP, ORIGIN = 5, 8, 64, 60  # spot grid (pixels)
GENES = (
    "ACTB GAPDH ERBB2 KRT8 KRT18 KRT19 EPCAM VIM CD74 MKI67 ESR1 PGR TFF1 COL1A1 COL1A2 COL3A1 FN1 SPARC PTPRC "
    "CD3E MS4A1 LYZ B2M MALAT1 TMSB4X EEF1A1 FTL FTH1 MGP DCN"
).split()
MARKED = 9  # the spot with a bright square under it
GREEN = (0, 255, 0)
MARKER_HALF = 8  # half side of the square (level-0 pixels)


def _positions() -> np.ndarray:
    rows, cols = np.divmod(np.arange(N_ROWS * N_COLS), N_COLS)
    return np.c_[ORIGIN + cols * STEP, ORIGIN + rows * STEP].astype(float)  # x, y


def _slide(path, *, mpp: float | None = MPP, marker: bool = True):
    """A 600 x 500 px 3-level OME pyramid (level k = level 0 subsampled by 2**k) of pink noise, with a green square
    centred on spot MARKED."""
    rng = np.random.default_rng(0)
    img = np.clip(np.array([232, 166, 204]) + rng.integers(-20, 20, (H, W, 3)), 0, 255).astype(np.uint8)
    if marker:
        x, y = _positions()[MARKED].astype(int)
        img[y - MARKER_HALF : y + MARKER_HALF, x - MARKER_HALF : x + MARKER_HALF] = GREEN
    levels = [img, np.ascontiguousarray(img[::2, ::2]), np.ascontiguousarray(img[::4, ::4])]
    metadata = {"axes": "YXS"}
    if mpp is not None:
        metadata.update(PhysicalSizeX=mpp, PhysicalSizeXUnit="µm", PhysicalSizeY=mpp, PhysicalSizeYUnit="µm")
    options = {"tile": (256, 256), "photometric": "rgb", "compression": "zlib"}
    with tifffile.TiffWriter(path, ome=mpp is not None) as tif:
        tif.write(levels[0], subifds=2, metadata=metadata if mpp is not None else None, **options)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, **options)
    return img


def _adata(seed: int = 0):
    import anndata as ad
    import pandas as pd
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    n = N_ROWS * N_COLS
    xy = _positions()
    rows, cols = np.divmod(np.arange(n), N_COLS)
    counts = rng.poisson(rng.gamma(2.0, 3.0, size=len(GENES)), size=(n, len(GENES))).astype(np.float32)
    obs = pd.DataFrame(
        {
            "in_tissue": np.ones(n, dtype=int),
            "array_row": rows,
            "array_col": cols * 2 + rows % 2,  # Visium's hexagonal indices
            "pxl_col_in_fullres": xy[:, 0],
            "pxl_row_in_fullres": xy[:, 1],
            "annotation": pd.Categorical(np.where(cols < N_COLS // 2, "tumour", "stroma")),
        },
        index=[f"{''.join(rng.choice(list('ACGT'), 16))}-1" for _ in range(n)],
    )
    adata = ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=pd.DataFrame(index=GENES))
    adata.obsm["spatial"] = xy
    return adata


META = {
    "dataset_title": "tiny test sample",
    "id": ID,
    "organ": "Breast",
    "species": "Homo sapiens",
    "st_technology": "Visium",
    "patient": None,
    "pixel_size_um_embedded": MPP,
    "pixel_size_um_estimated": MPP,
    "spot_diameter": DIAMETER_UM,
    "inter_spot_dist": 100.0,
    "fullres_px_width": W,
    "fullres_px_height": H,
}


def _hest(root, sample_id: str = ID, *, meta: dict | None = None, adata=None, slide_mpp: float | None = MPP):
    """Write one sample into the HEST layout under ``root``; returns (root, h5ad written, level-0 image)."""
    for sub in ("st", "wsis", "metadata"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    adata = _adata() if adata is None else adata
    adata.write_h5ad(root / "st" / f"{sample_id}.h5ad")
    img = _slide(root / "wsis" / f"{sample_id}.tif", mpp=slide_mpp)
    (root / "metadata" / f"{sample_id}.json").write_text(
        json.dumps({**META, "id": sample_id} if meta is None else meta)
    )
    return root, adata, img


@pytest.fixture(scope="module")
def hest_dir(tmp_path_factory):
    return _hest(tmp_path_factory.mktemp("hest"))


def _affine(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    return np.asarray(get_transformation(element, cs).to_affine_matrix(("x", "y"), ("x", "y")), dtype=float)


# ---------------------------------------------------------------------------------------------------------------------
# 1. the layout


def test_layout(hest_dir):
    import dask.array as da
    from spatialdata.models import Image2DModel, ShapesModel, TableModel, get_model
    from spatialdata.transformations import get_transformation

    root, adata, _ = hest_dir
    sdata = st.io.read_hest(root)  # the one sample of the folder
    image_key, shapes_key = f"{ID}_image", f"{ID}_spots"
    assert list(sdata.images) == [image_key] and list(sdata.shapes) == [shapes_key]
    assert list(sdata.tables) == [K.TABLE_KEY]

    # the slide: lazy, multiscale (the TIFF's 3 levels), in the coordinate system of the section
    tree = sdata.images[image_key]
    assert get_model(tree) is Image2DModel
    assert list(tree.children) == ["scale0", "scale1", "scale2"]
    level0 = tree["scale0"]["image"]
    assert level0.shape == (3, H, W) and level0.dtype == np.uint8
    assert isinstance(level0.data, da.Array)
    assert any(name.startswith(("from-zarr", "original-array")) for name in level0.data.dask.layers)
    assert list(get_transformation(tree, get_all=True)) == [ID]
    assert sdata.attrs["sthinge_slides"][image_key]["mpp"] == pytest.approx(MPP)

    # the spots: circles at obsm["spatial"], radius = diameter / 2 / mpp pixels, in the same coordinate system
    shapes = sdata.shapes[shapes_key]
    assert get_model(shapes) is ShapesModel
    np.testing.assert_allclose(np.c_[shapes.geometry.x, shapes.geometry.y], adata.obsm["spatial"])
    np.testing.assert_allclose(shapes["radius"], DIAMETER_UM / 2 / MPP)
    np.testing.assert_array_equal(_affine(shapes, ID), np.eye(3))

    # the table: the h5ad's counts as integers, linked to the circles
    table = sdata.tables[K.TABLE_KEY]
    assert get_model(table) is TableModel
    assert np.issubdtype(table.X.dtype, np.integer)
    np.testing.assert_array_equal(table.X.toarray(), adata.X.toarray().astype(int))
    assert list(table.var_names) == GENES
    assert list(table.obs_names) == [f"{ID}_{b}" for b in adata.obs_names]
    assert (table.obs[K.SECTION_KEY] == ID).all() and (table.obs[K.PATIENT_KEY] == ID).all()
    assert (table.obs[K.REGION_KEY] == shapes_key).all()
    np.testing.assert_array_equal(table.obs[K.INSTANCE_KEY], np.arange(adata.n_obs))
    np.testing.assert_array_equal(table.obs[K.ARRAY_X], adata.obs["array_col"])
    np.testing.assert_array_equal(table.obs[K.ARRAY_Y], adata.obs["array_row"])
    np.testing.assert_array_equal(table.obs["in_tissue"], 1)  # HEST's own columns are kept
    np.testing.assert_array_equal(table.obs["annotation"].astype(str), adata.obs["annotation"].astype(str))
    np.testing.assert_allclose(table.obsm[K.SPATIAL_KEY], adata.obsm["spatial"])
    info = table.uns[K.UNS_SECTIONS][ID]
    assert info["mpp"] == pytest.approx(MPP) and info["spot_diameter_um"] == DIAMETER_UM
    assert info["image"] == image_key and info["shapes"] == shapes_key
    assert info["hest_sample_id"] == ID and info["hest"] == META

    # one file of the sample names it too; options rename the section and patient
    other = st.io.read_hest(root / "metadata" / f"{ID}.json", section="S1", patient="P7")
    assert list(other.images) == ["S1_image"] and list(other.shapes) == ["S1_spots"]
    assert (other.tables[K.TABLE_KEY].obs[K.PATIENT_KEY] == "P7").all()
    assert list(get_transformation(other.images["S1_image"], get_all=True)) == ["S1"]


def test_write_and_read_zarr(hest_dir, tmp_path):
    from spatialdata import read_zarr

    root, adata, _ = hest_dir
    sdata = st.io.read_hest(root)
    sdata.write(tmp_path / "s.zarr")
    back = read_zarr(tmp_path / "s.zarr")
    table = back.tables[K.TABLE_KEY]
    assert table.uns[K.UNS_SECTIONS][ID]["hest"] == META  # None values too
    np.testing.assert_array_equal(table.X.toarray(), adata.X.toarray())
    assert back.attrs["sthinge_slides"][f"{ID}_image"]["mpp"] == pytest.approx(MPP)
    assert list(back.images[f"{ID}_image"].children) == ["scale0", "scale1", "scale2"]


# ---------------------------------------------------------------------------------------------------------------------
# 2. the bright square under one spot is under its circle at levels 0 and 1


def test_marker_under_its_spot_at_levels_0_and_1(hest_dir):
    root, _, _ = hest_dir
    sdata = st.io.read_hest(root, sample_id=ID)
    shapes = sdata.shapes[f"{ID}_spots"]
    xy = np.c_[shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy(), np.ones(len(shapes))]
    centre = (xy @ _affine(shapes, ID).T)[MARKED]  # in the coordinate system: level-0 pixels
    for k in (0, 1):
        level = sdata.images[f"{ID}_image"][f"scale{k}"]["image"]
        col, row = (np.linalg.inv(_affine(level, ID)) @ centre)[:2]
        assert tuple(level.data[:, int(np.floor(row)), int(np.floor(col))].compute()) == GREEN, f"level {k}"
    # the scale matters: level-0 pixel coordinates read on level 1 miss the marker
    col, row = centre[:2].astype(int)
    level1 = sdata.images[f"{ID}_image"]["scale1"]["image"]
    assert tuple(level1.data[:, row, col].compute()) != GREEN
    # and the other spots' centres are not green
    other = (xy @ _affine(shapes, ID).T)[MARKED + 1]
    assert (
        tuple(sdata.images[f"{ID}_image"]["scale0"]["image"].data[:, int(other[1]), int(other[0])].compute()) != GREEN
    )


# ---------------------------------------------------------------------------------------------------------------------
# 3. end to end


@pytest.mark.usefixtures("one_thread")
def test_end_to_end(hest_dir):
    from sthinge._settings import settings

    settings.verbosity = 1  # warnings only (put back by the conftest)
    root, adata, _ = hest_dir
    sdata = st.io.read_hest(root, sample_id=ID)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=len(GENES), vocab="cellfm-80m")
    st.pp.embed_histology(sdata, encoder="he-stats", batch_size=64)
    table = sdata.tables[K.TABLE_KEY]
    assert np.isfinite(table.obsm["X_he-stats"]).all()
    model = st.tl.fit(
        sdata,
        backbone="tiny",
        max_epochs=1,
        batch_size=16,
        min_epochs=0,
        curriculum_epochs=1,
        val_metric="loss",
        calibration_samples=2,
        calibration_steps=3,
    )
    st.tl.predict(sdata, model, n_steps=3, n_samples=2)
    pred = sdata.tables[K.PRED_KEY]
    assert pred.shape == (adata.n_obs, len(model.genes)) and len(model.genes) > 0
    assert np.isfinite(pred.X).all()
    assert (pred.obs[K.SECTION_KEY] == ID).all()


# ---------------------------------------------------------------------------------------------------------------------
# 4. pixel sizes, spot sizes


def test_pixel_size_sources(tmp_path, sthinge_log):
    # the metadata's pixel size wins over the TIFF's, with a warning
    root, _, _ = _hest(tmp_path / "a", slide_mpp=0.5)
    sdata = st.io.read_hest(root)
    info = sdata.tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]
    assert info["mpp"] == pytest.approx(MPP)
    np.testing.assert_allclose(sdata.shapes[f"{ID}_spots"]["radius"], DIAMETER_UM / 2 / MPP)
    assert sdata.attrs["sthinge_slides"][f"{ID}_image"]["mpp_source"] == "hest metadata"
    warnings = [r.getMessage() for r in sthinge_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "pixel_size_um_estimated" in warnings[0] and "differs" in warnings[0]
    # `mpp=` wins over both
    assert st.io.read_hest(root, mpp=0.25).tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]["mpp"] == 0.25
    # no pixel size in the metadata: the TIFF's
    meta = {k: v for k, v in META.items() if k != "pixel_size_um_estimated"}
    root, _, _ = _hest(tmp_path / "b", meta=meta, slide_mpp=0.5)
    sdata = st.io.read_hest(root)
    assert sdata.tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]["mpp"] == pytest.approx(0.5)
    np.testing.assert_allclose(sdata.shapes[f"{ID}_spots"]["radius"], DIAMETER_UM / 2 / 0.5)


def test_positions_outside_the_slide_warn(tmp_path, sthinge_log):
    adata = _adata()
    adata.obsm["spatial"] = adata.obsm["spatial"] * 4  # e.g. positions of another resolution
    root, _, _ = _hest(tmp_path, adata=adata)
    st.io.read_hest(root)
    assert [r for r in sthinge_log.records if r.levelno == logging.WARNING and "outside" in r.getMessage()]


def test_spot_diameter_fallbacks(tmp_path, sthinge_log):
    meta = {k: v for k, v in META.items() if k != "spot_diameter"}
    root, _, _ = _hest(tmp_path, meta=meta)
    sdata = st.io.read_hest(root)  # Visium: 55 µm, with a warning
    assert sdata.tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]["spot_diameter_um"] == 55.0
    assert [r for r in sthinge_log.records if r.levelno == logging.WARNING and "55 µm" in r.getMessage()]
    sdata = st.io.read_hest(root, spot_diameter_um=20.0)
    np.testing.assert_allclose(sdata.shapes[f"{ID}_spots"]["radius"], 10.0 / MPP)
    # another technology: the spot spacing (HEST's square Xenium pseudo-spots)
    (root / "metadata" / f"{ID}.json").write_text(json.dumps({**meta, "st_technology": "Xenium"}))
    assert st.io.read_hest(root).tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]["spot_diameter_um"] == 100.0
    (root / "metadata" / f"{ID}.json").write_text(
        json.dumps({**meta, "st_technology": "Xenium", "inter_spot_dist": None})
    )
    with pytest.raises(ValueError, match="spot_diameter_um"):
        st.io.read_hest(root)


# ---------------------------------------------------------------------------------------------------------------------
# 5. bad input


def test_missing_folder_and_files(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="`path`.*nowhere"):
        st.io.read_hest(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="`path`.*st/"):
        st.io.read_hest(tmp_path / "empty")
    with pytest.raises(TypeError, match="`path`"):
        st.io.read_hest(3)
    root, _, _ = _hest(tmp_path / "h")
    (root / "wsis" / f"{ID}.tif").unlink()
    with pytest.raises(FileNotFoundError, match=f"slide of HEST sample '{ID}'"):
        st.io.read_hest(root)
    (root / "metadata" / f"{ID}.json").unlink()
    _slide(root / "wsis" / f"{ID}.tif")
    with pytest.raises(FileNotFoundError, match=f"metadata of HEST sample '{ID}'"):
        st.io.read_hest(root)


def test_several_samples_and_unknown_sample_id(tmp_path):
    root, _, _ = _hest(tmp_path)
    (root / "st" / "MEND2.h5ad").write_bytes((root / "st" / f"{ID}.h5ad").read_bytes())
    with pytest.raises(ValueError, match=r"2 HEST samples.*`sample_id=`.*\['MEND2', 'TENX1'\]"):
        st.io.read_hest(root)
    with pytest.raises(FileNotFoundError, match=r"`sample_id` 'NCBI9'.*\['MEND2', 'TENX1'\]"):
        st.io.read_hest(root, sample_id="NCBI9")
    with pytest.raises(ValueError, match="`sample_id` 'MEND2' contradicts `path`"):
        st.io.read_hest(root / "st" / f"{ID}.h5ad", sample_id="MEND2")
    assert list(st.io.read_hest(root, sample_id=ID).images) == [f"{ID}_image"]


def test_no_pixel_size_anywhere(tmp_path):
    meta = {k: v for k, v in META.items() if k != "pixel_size_um_estimated"}
    root, _, _ = _hest(tmp_path, meta=meta, slide_mpp=None)
    with pytest.raises(ValueError, match=r"No pixel size.*pixel_size_um_estimated.*`mpp=`"):
        st.io.read_hest(root)
    sdata = st.io.read_hest(root, mpp=2.0)
    assert sdata.tables[K.TABLE_KEY].uns[K.UNS_SECTIONS][ID]["mpp"] == 2.0
    (root / "metadata" / f"{ID}.json").write_text(json.dumps({**meta, "pixel_size_um_estimated": "big"}))
    with pytest.raises(ValueError, match="'pixel_size_um_estimated'.*positive number"):
        st.io.read_hest(root)


def test_non_integer_and_negative_counts(tmp_path):
    adata = _adata()
    adata.X = adata.X.toarray() + 0.5
    root, _, _ = _hest(tmp_path / "a", adata=adata)
    with pytest.raises(ValueError, match=r"counts in X .* not integers"):
        st.io.read_hest(root)
    adata = _adata()
    adata.X = -adata.X.toarray()
    adata.X[0, 0] = -1
    root, _, _ = _hest(tmp_path / "b", adata=adata)
    with pytest.raises(ValueError, match="negative"):
        st.io.read_hest(root)
    with pytest.raises(ValueError, match="`layer` 'counts'"):
        st.io.read_hest(root, layer="counts")


def test_bad_arguments(hest_dir):
    root, _, _ = hest_dir
    with pytest.raises(ValueError, match="`section`"):
        st.io.read_hest(root, section="a/b")
    with pytest.raises(TypeError, match="`sample_id`"):
        st.io.read_hest(root, sample_id=1)
    with pytest.raises(ValueError, match="`patient`"):
        st.io.read_hest(root, patient="")
    with pytest.raises(ValueError, match="`mpp`"):
        st.io.read_hest(root, mpp=0)
    with pytest.raises(ValueError, match="`spot_diameter_um`"):
        st.io.read_hest(root, spot_diameter_um=-5)
    with pytest.raises(ValueError, match=re.escape("`chunks`")):
        st.io.read_hest(root, chunks=0)
