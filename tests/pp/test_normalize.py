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
    before = _snapshot(sdata)
    out = st.pp.normalize(sdata, copy=True)
    assert "sthinge_log1p" in out.layers
    assert _snapshot(sdata) == before
    assert st.pp.normalize(sdata) is None
    assert "sthinge_log1p" in sdata.tables["table"].layers


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
