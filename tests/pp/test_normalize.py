import numpy as np
import pytest
import scipy.sparse as sp
from pp_helpers import _snapshot

import sthinge as st


def test_log1p_cp10k_values_and_counts_untouched(adata):
    raw = adata.X.copy()
    st.pp.normalize(adata)
    out = adata.layers["sthinge_log1p"]
    assert sp.issparse(out) and out.dtype == np.float32
    x = raw.toarray().astype(float)
    expected = np.log1p(x / x.sum(1, keepdims=True) * 1e4)  # library over ALL genes
    np.testing.assert_allclose(out.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert (adata.X != raw).nnz == 0
    assert adata.uns["sthinge_normalize"]["transform"] == "log1p_cp10k"
    assert adata.uns["sthinge_normalize"]["key_added"] == "sthinge_log1p"


def test_log2_raw_dense(adata):
    adata.X = adata.X.toarray()
    st.pp.normalize(adata, transform="log2_raw", key_added="l2")
    np.testing.assert_allclose(adata.layers["l2"], np.log2(1 + adata.X), rtol=1e-6)
    assert adata.uns["sthinge_normalize"]["log_base"] == "2"


def test_copy_semantics(sdata):
    """copy=True: a normalised copy of the same type (SpatialData in, SpatialData out); the original unchanged."""
    from spatialdata import SpatialData

    before = _snapshot(sdata)
    out = st.pp.normalize(sdata, copy=True)
    assert isinstance(out, SpatialData) and out is not sdata
    assert "sthinge_log1p" in out.tables["table"].layers and "sthinge_normalize" in out.tables["table"].uns
    assert sorted(out.images) == sorted(sdata.images) and sorted(out.shapes) == sorted(sdata.shapes)
    assert _snapshot(sdata) == before
    assert "sthinge_log1p" not in sdata.tables["table"].layers
    assert st.pp.normalize(sdata) is None
    assert "sthinge_log1p" in sdata.tables["table"].layers
    # a copy needs no `overwrite`, and writes into the copy only
    again = st.pp.normalize(sdata, transform="log2_raw", copy=True)
    assert again.tables["table"].uns["sthinge_normalize"]["transform"] == "log2_raw"
    assert sdata.tables["table"].uns["sthinge_normalize"]["transform"] == "log1p_cp10k"


def test_copy_semantics_anndata(adata):
    from anndata import AnnData

    raw = adata.X.copy()
    out = st.pp.normalize(adata, copy=True)
    assert isinstance(out, AnnData) and out is not adata
    assert "sthinge_log1p" in out.layers and "sthinge_log1p" not in adata.layers
    assert "sthinge_normalize" not in adata.uns and (adata.X != raw).nnz == 0


@pytest.mark.parametrize(
    ("value", "match"),
    [(np.nan, "NaN"), (-1.0, "negative"), (0.5, "already normalised")],
)
def test_bad_counts_refused_before_writing(adata, value, match):
    x = adata.X.toarray().astype(np.float32)
    x[0, 0] = value
    adata.X = sp.csr_matrix(x)
    before = _snapshot(adata)
    with pytest.raises(ValueError, match=match):
        st.pp.normalize(adata)
    assert _snapshot(adata) == before


def test_allow_non_integer(adata):
    adata.X = adata.X.astype(np.float32) * 0.5
    st.pp.normalize(adata, allow_non_integer=True)
    assert np.isfinite(adata.layers["sthinge_log1p"].data).all()


def test_argument_errors(adata):
    with pytest.raises(ValueError, match="transform"):
        st.pp.normalize(adata, transform="log10")
    with pytest.raises(KeyError, match="layer"):
        st.pp.normalize(adata, layer="nope")
    with pytest.raises(TypeError, match="data"):
        st.pp.normalize(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="copy"):
        st.pp.normalize(adata, copy="yes")
