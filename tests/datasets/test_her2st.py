import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K
from sthinge.datasets import _her2st, _registry


@pytest.fixture(scope="module")
def c2(her2st_dir):
    return st.datasets.her2st(["C2"], path=her2st_dir)


@pytest.mark.realdata
def test_c2_shape_and_elements(c2):
    table = c2.tables[K.TABLE_KEY]
    assert table.n_obs == 187
    assert table.n_vars == 15706
    assert list(c2.images) == ["C2_image"]
    assert list(c2.shapes) == ["C2_spots"]
    assert np.issubdtype(table.X.dtype, np.integer)
    assert table.obs[K.SECTION_KEY].unique().tolist() == ["C2"]
    assert table.obs[K.PATIENT_KEY].unique().tolist() == ["C"]
    assert (table.var[K.VAR_N_SECTIONS] == 1).all()


@pytest.mark.realdata
def test_c2_geometry(c2):
    table = c2.tables[K.TABLE_KEY]
    mpp = table.uns[K.UNS_SECTIONS]["C2"]["mpp"]
    # 1.455 px/um for patient C (README of the data); derived from the grid, not a constant
    assert 1 / mpp == pytest.approx(1.455, rel=0.02)
    circles = c2.shapes["C2_spots"]
    radius = circles["radius"].to_numpy()
    np.testing.assert_allclose(radius * mpp, 50.0)
    xy = np.stack([circles.geometry.x.to_numpy(), circles.geometry.y.to_numpy()], axis=1)
    np.testing.assert_allclose(xy, table.obsm[K.SPATIAL_KEY])
    img = c2.images["C2_image"]["scale0"].image
    h, w = img.shape[1:]
    assert (xy[:, 0] - radius > 0).all() and (xy[:, 0] + radius < w).all()
    assert (xy[:, 1] - radius > 0).all() and (xy[:, 1] + radius < h).all()
    # neighbouring spot centres (array neighbours) are 200 um apart at the recorded scale
    arr = table.obs[[K.ARRAY_X, K.ARRAY_Y]].to_numpy()
    adjacent = np.abs(arr[:, None] - arr[None]).sum(-1) == 1
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))[adjacent]
    assert np.median(d) * mpp == pytest.approx(200.0, rel=0.03)
    # tissue under the circles is darker than the slide background (image corners)
    low = np.asarray(c2.images["C2_image"]["scale3"].image.values).astype(float).mean(0)  # 8x down-sampled
    f = low.shape[0] / h
    under = np.array([low[int(y * f), int(x * f)] for x, y in xy])
    ends = (slice(0, 20), slice(-20, None))
    corners = np.concatenate([low[a, b].ravel() for a in ends for b in ends])
    assert np.median(under) < np.median(corners) - 30


@pytest.mark.realdata
def test_a1_without_image_has_labels(her2st_dir):
    sdata = st.datasets.her2st("A1", path=her2st_dir)
    table = sdata.tables[K.TABLE_KEY]
    assert len(sdata.images) == 0
    assert list(sdata.shapes) == ["A1_spots"]
    assert table.n_obs == 346
    assert table.obs[K.LABEL_KEY].notna().sum() > 300
    assert "invasive cancer" in set(table.obs[K.LABEL_KEY].dropna())
    assert table.uns[K.UNS_SECTIONS]["A1"]["image"] is None
    assert 1 / table.uns[K.UNS_SECTIONS]["A1"]["mpp"] == pytest.approx(1.09, rel=0.03)


@pytest.mark.realdata
def test_gene_union_and_presence(her2st_dir):
    sdata = st.datasets.her2st(["C2", "H3"], path=her2st_dir)
    table = sdata.tables[K.TABLE_KEY]
    var = table.var
    n_c2 = var[K.VAR_SECTIONS].str.contains("C2").sum()
    n_h3 = var[K.VAR_SECTIONS].str.contains("H3").sum()
    assert (n_c2, n_h3) == (15706, 14873)
    assert table.n_vars == 15706 + 14873 - (var[K.VAR_N_SECTIONS] == 2).sum()
    # zero where a section does not list a gene
    only_c2 = np.flatnonzero(var[K.VAR_SECTIONS].to_numpy() == "C2")
    h3_rows = np.flatnonzero(table.obs[K.SECTION_KEY].to_numpy() == "H3")
    assert table.X[h3_rows][:, only_c2].nnz == 0


@pytest.mark.realdata
def test_zarr_round_trip(c2, tmp_path):
    from spatialdata import read_zarr

    c2.write(tmp_path / "c2.zarr")
    back = read_zarr(tmp_path / "c2.zarr")
    t0, t1 = c2.tables[K.TABLE_KEY], back.tables[K.TABLE_KEY]
    assert (t0.X != t1.X).nnz == 0
    assert t0.obs.equals(t1.obs.loc[t0.obs_names])
    assert t1.uns[K.UNS_SECTIONS]["C2"]["mpp"] == pytest.approx(t0.uns[K.UNS_SECTIONS]["C2"]["mpp"])
    np.testing.assert_allclose(t0.obsm[K.SPATIAL_KEY], t1.obsm[K.SPATIAL_KEY])
    s0, s1 = c2.shapes["C2_spots"], back.shapes["C2_spots"]
    np.testing.assert_allclose(s0["radius"], s1["radius"])
    np.testing.assert_allclose(s0.geometry.x, s1.geometry.x)
    a = c2.images["C2_image"]["scale2"].image.values
    b = back.images["C2_image"]["scale2"].image.values
    np.testing.assert_array_equal(a, b)
    assert set(back.coordinate_systems) == {"C2"}


def test_unknown_section():
    with pytest.raises(ValueError, match="Unknown Her2ST section"):
        st.datasets.her2st(["Z9"])
    with pytest.raises(ValueError, match="B4"):
        st.datasets.her2st("B4")  # not in the public files
    with pytest.raises(TypeError, match="sections"):
        st.datasets.her2st(3)


def test_path_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not hold the Her2ST files"):
        st.datasets.her2st(["C2"], path=tmp_path)


def test_corrupted_download_keeps_nothing(tmp_path, monkeypatch):
    import pooch

    from sthinge import settings

    monkeypatch.setattr(settings, "_datadir", tmp_path / "nothing-here")

    def bad_download(self, url, output_file, pooch_obj, check_only=False):
        with open(output_file, "wb") as f:
            f.write(b"this is not the file you are looking for")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", bad_download)
    with pytest.raises(ValueError, match="corrupted"):
        st.datasets.her2st(["A1"])
    cache = settings.cachedir / "her2st"
    assert not any(p.is_file() for p in cache.rglob("*")) if cache.exists() else True


def test_offline_error_says_where_to_put_files(tmp_path, monkeypatch):
    import pooch

    from sthinge import settings

    monkeypatch.setattr(settings, "_datadir", None)
    monkeypatch.delenv("STHINGE_DATA_DIR", raising=False)

    def offline(self, url, output_file, pooch_obj, check_only=False):
        raise ConnectionError("no network")

    monkeypatch.setattr(pooch.HTTPDownloader, "__call__", offline)
    with pytest.raises(FileNotFoundError, match="STHINGE_DATA_DIR"):
        st.datasets.her2st(["A1"])


def test_registry_covers_every_section():
    for s in _her2st.HER2ST_SECTIONS:
        for f in _her2st._files_for(s):
            assert f in _registry.FILES, f
            sha = _registry.FILES[f][0]
            assert len(sha) == 64 and int(sha, 16) >= 0
            assert _registry.url(f).startswith("https://github.com/almaan/her2st/raw/")
    assert len(_her2st.HER2ST_SECTIONS) == 35
