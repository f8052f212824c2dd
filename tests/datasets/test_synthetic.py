import numpy as np
import pytest
from scipy.stats import spearmanr

import sthinge as st
from sthinge import _constants as K


def test_synthetic_layout():
    sdata = st.datasets.synthetic(n_sections=2, n_spots=49, n_genes=20, seed=3)
    table = sdata.tables[K.TABLE_KEY]
    assert table.shape == (98, 20)
    assert set(sdata.images) == {"S1_image", "S2_image"}
    assert set(sdata.shapes) == {"S1_spots", "S2_spots"}
    attrs = table.uns["spatialdata_attrs"]
    assert attrs["region_key"] == K.REGION_KEY and attrs["instance_key"] == K.INSTANCE_KEY
    assert sorted(attrs["region"]) == ["S1_spots", "S2_spots"]
    assert np.issubdtype(table.X.dtype, np.integer)
    meta = table.uns[K.UNS_SECTIONS]
    assert meta["S1"]["mpp"] != meta["S2"]["mpp"]  # scale varies by section
    # circles have the 50 um radius in pixels of their own section
    for s in ("S1", "S2"):
        radius = sdata.shapes[f"{s}_spots"]["radius"].to_numpy()
        np.testing.assert_allclose(radius * meta[s]["mpp"], 50.0)
    # genes are real CellFM symbols
    from sthinge._vocab import cellfm_vocab

    assert set(table.var_names) <= set(cellfm_vocab(24078))


def test_synthetic_is_deterministic_and_seeded():
    a = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10, seed=1).tables[K.TABLE_KEY]
    b = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10, seed=1).tables[K.TABLE_KEY]
    c = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10, seed=2).tables[K.TABLE_KEY]
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_synthetic_expression_depends_on_image():
    """The darkness of the image under a spot predicts expression: a model can learn from the image."""
    sdata = st.datasets.synthetic(n_sections=1, n_spots=100, n_genes=30, seed=0)
    table = sdata.tables[K.TABLE_KEY]
    img = np.asarray(sdata.images["S1_image"]["scale0"].image.values).astype(float)  # (c, y, x)
    xy = table.obsm[K.SPATIAL_KEY]
    r = int(sdata.shapes["S1_spots"]["radius"].iloc[0])
    dark = np.array([255 - img[:, int(y) - r : int(y) + r, int(x) - r : int(x) + r].mean() for x, y in xy])
    logx = np.log1p(np.asarray(table.X.todense()) / table.X.sum(1).A * 1e4)
    rho = np.array([abs(spearmanr(dark, logx[:, g]).statistic) for g in range(logx.shape[1])])
    assert np.nanmax(rho) > 0.6
    assert np.nanmean(rho) > 0.2


def test_synthetic_without_image():
    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=8, image=False)
    assert len(sdata.images) == 0
    assert sdata.tables[K.TABLE_KEY].n_obs == 32


@pytest.mark.parametrize(
    ("kwargs", "err"),
    [
        ({"n_sections": 0}, ValueError),
        ({"n_spots": 2}, ValueError),
        ({"n_genes": "10"}, TypeError),
        ({"image": "yes"}, TypeError),
        ({"seed": -1}, ValueError),
    ],
)
def test_synthetic_bad_input(kwargs, err):
    with pytest.raises(err, match=next(iter(kwargs))):
        st.datasets.synthetic(**kwargs)
