import numpy as np
import pytest
import scipy.sparse as sp
from pp_helpers import _snapshot

import sthinge as st
from sthinge.pp._aliases import map_to_vocab


def _hmhvg_reference(adata, train, n_top):
    x = adata.X.toarray().astype(float)
    rows = adata.obs["section"].isin(train).to_numpy()
    y = np.log1p(x / x.sum(1, keepdims=True) * 1e4)[rows]
    mean, var = y.mean(0), y.var(0)
    top_m = set(np.argsort(-mean, kind="stable")[:n_top])
    top_v = set(np.argsort(-var, kind="stable")[:n_top])
    return {adata.var_names[i] for i in top_m & top_v}


def test_hmhvg_matches_reference_and_training_only(adata):
    st.pp.select_genes(adata, train_sections=["S1", "S2"], n_top=15)
    panel = adata.uns["sthinge_genes"]["genes"]
    assert set(panel) == _hmhvg_reference(adata, ["S1", "S2"], 15)
    assert adata.var["sthinge_genes"].sum() == len(panel) <= 15
    # vocabulary order = ascending CellFM id
    from sthinge._vocab import cellfm_gene_ids

    ids = cellfm_gene_ids(adata.uns["sthinge_genes"]["params"]["symbols"])
    assert ids == sorted(ids)
    # changing the held-out section's expression does not change the panel
    x = adata.X.toarray()
    x[(adata.obs["section"] == "S3").to_numpy()] *= 7
    other = adata.copy()
    other.X = sp.csr_matrix(x)
    st.pp.select_genes(other, train_sections=["S1", "S2"], n_top=15)
    assert other.uns["sthinge_genes"]["genes"] == panel


def test_uses_normalized_layer_and_is_reproducible(sdata):
    st.pp.normalize(sdata)
    a = st.pp.select_genes(sdata, n_top=20, copy=True)
    b = st.pp.select_genes(sdata, n_top=20, copy=True)
    assert a.tables["table"].uns["sthinge_genes"]["genes"] == b.tables["table"].uns["sthinge_genes"]["genes"]
    assert a.tables["table"].uns["sthinge_genes"]["params"]["layer"] == "sthinge_log1p"


def test_vocab_mapping_and_drop_counts(adata):
    names = list(adata.var_names)
    names[0], names[1], names[2] = "KIAA0101", "not_a_gene", names[3].lower()  # renamed, unknown, case
    adata.var_names = names
    st.pp.select_genes(adata, n_top=40)
    params = adata.uns["sthinge_genes"]["params"]
    assert params["n_not_in_vocab"] == 1
    assert params["renamed"]["KIAA0101"] == "PCLAF"
    assert adata.var["sthinge_genes_symbol"].iloc[1] == ""
    assert params["n_input"] == 40
    assert (
        params["n_not_in_vocab"] + params["n_duplicate"] + params["n_absent"] + params["n_not_top"] + params["n_genes"]
        == 40
    )


def test_alias_helpers():
    vocab = ["PCLAF", "SEPTIN7", "QARS1", "ABC", "C1orf112"]
    mapped, how = map_to_vocab(["KIAA0101", "SEPT7", "QARS", "OLD", "c1orf112", "XYZ"], vocab, {"OLD": "ABC"})
    assert mapped == ["PCLAF", "SEPTIN7", "QARS1", "ABC", "C1orf112", None]
    assert how == ["renamed", "renamed", "renamed", "alias", "case", ""]


def test_absent_genes_dropped_without_var_sections(adata):
    del adata.var["sections"]
    x = adata.X.toarray()
    x[(adata.obs["section"] == "S2").to_numpy(), 0] = 0  # gene 0 absent from S2
    adata.X = sp.csr_matrix(x)
    st.pp.select_genes(adata, train_sections=["S1", "S2"], n_top=40)
    assert not adata.var["sthinge_genes"].iloc[0]
    assert adata.uns["sthinge_genes"]["params"]["n_absent"] == 1
    assert adata.uns["sthinge_genes"]["params"]["presence"] == "nonzero counts"


def test_explicit_genes_gene_symbols_and_user_vocab(adata):
    adata.var["symbol"] = adata.var_names
    adata.var_names = [f"ENSG{i:011d}" for i in range(adata.n_vars)]
    genes = list(adata.var["symbol"][[5, 2]])
    st.pp.select_genes(adata, genes=genes, gene_symbols="symbol")
    assert adata.uns["sthinge_genes"]["genes"] == [adata.var_names[2], adata.var_names[5]]  # vocabulary order
    st.pp.select_genes(adata, vocab=list(adata.var["symbol"][:10]), gene_symbols="symbol", n_top=5)
    assert set(adata.uns["sthinge_genes"]["params"]["symbols"]) <= set(adata.var["symbol"][:10])
    st.pp.select_genes(adata, vocab=None, gene_symbols="symbol", n_top=30)
    assert adata.uns["sthinge_genes"]["params"]["vocab"] == "none"


def test_errors_leave_object_unchanged(sdata):
    before = _snapshot(sdata)
    with pytest.raises(ValueError, match="train_sections"):
        st.pp.select_genes(sdata, train_sections=["nope"])
    with pytest.raises(ValueError, match="vocab"):
        st.pp.select_genes(sdata, vocab="cellfm-1b")
    with pytest.raises(TypeError, match="n_top"):
        st.pp.select_genes(sdata, n_top=3.5)
    with pytest.raises(KeyError, match="genes"):
        st.pp.select_genes(sdata, genes=["NOT_A_GENE"])
    with pytest.raises(KeyError, match="gene_symbols"):
        st.pp.select_genes(sdata, gene_symbols="nope")
    table = sdata.tables["table"]
    table.layers["bad"] = table.X.astype(np.float32)
    table.layers["bad"].data[0] = np.nan
    before = _snapshot(sdata)
    with pytest.raises(ValueError, match="NaN"):
        st.pp.select_genes(sdata, layer="bad")
    assert _snapshot(sdata) == before
    from spatialdata import SpatialData

    with pytest.raises(KeyError, match="no table"):
        st.pp.select_genes(SpatialData())


def test_copy_semantics(sdata):
    from spatialdata import SpatialData

    before = _snapshot(sdata)
    out = st.pp.select_genes(sdata, n_top=20, copy=True)
    assert isinstance(out, SpatialData) and "sthinge_genes" in out.tables["table"].var
    assert _snapshot(sdata) == before
    assert st.pp.select_genes(sdata, n_top=20) is None
    assert "sthinge_genes" in sdata.tables["table"].var
    assert sdata.tables["table"].uns["sthinge_genes"]["genes"] == out.tables["table"].uns["sthinge_genes"]["genes"]


def test_copy_semantics_anndata(adata):
    from anndata import AnnData

    out = st.pp.select_genes(adata, n_top=20, copy=True)
    assert isinstance(out, AnnData) and out is not adata
    assert "sthinge_genes" in out.var and "sthinge_genes" not in adata.var and "sthinge_genes" not in adata.uns


def test_params_nested_under_the_key(adata):
    """One uns entry: the panel under "genes", the run's parameters under "params"; no sibling `_params` key."""
    st.pp.select_genes(adata, train_sections=["S1", "S2"], n_top=15, key_added="panel")
    entry = adata.uns["panel"]
    assert set(entry) == {"genes", "params"}
    assert entry["params"]["train_sections"] == ["S1", "S2"] and entry["params"]["n_top"] == 15
    assert entry["params"]["n_genes"] == len(entry["genes"]) == adata.var["panel"].sum()
    assert not [k for k in adata.uns if k.endswith("_params")]


def test_old_layout_still_read(adata):
    """A table written by an older sthinge (a list in uns[key], the parameters in uns[f"{key}_params"])."""
    from sthinge.tl._data import _panel, _panel_symbols

    st.pp.select_genes(adata, n_top=15)
    entry = adata.uns.pop("sthinge_genes")
    old = adata.copy()
    old.uns["sthinge_genes"] = list(entry["genes"])
    old.uns["sthinge_genes_params"] = dict(entry["params"], symbols=[f"SYM{i}" for i in range(len(entry["genes"]))])
    assert _panel(old, "sthinge_genes") == list(entry["genes"])
    assert _panel_symbols(old, "sthinge_genes", list(entry["genes"]))[0] == "SYM0"
    # selecting again writes the new layout and drops the stale sibling
    st.pp.select_genes(old, n_top=15)
    assert "sthinge_genes_params" not in old.uns and old.uns["sthinge_genes"]["genes"] == list(entry["genes"])


@pytest.mark.realdata
def test_her2st_patient_c_panel(her2st_dir):
    """Her2ST C2–C6 counts (no images): panel size, vocabulary drops, reproducibility."""
    import anndata as ad
    import pandas as pd

    blocks, genes_per = [], {}
    for s in ["C2", "C3", "C4", "C5", "C6"]:
        counts = pd.read_csv(her2st_dir / "counts" / f"{s}.tsv.gz", sep="\t", index_col=0)
        genes_per[s] = set(counts.columns)
        blocks.append(
            ad.AnnData(
                sp.csr_matrix(counts.to_numpy(np.int32)),
                obs=pd.DataFrame({"section": s}, index=[f"{s}_{b}" for b in counts.index]),
                var=pd.DataFrame(index=counts.columns.astype(str)),
            )
        )
    adata = ad.concat(blocks, join="outer", fill_value=0)
    adata.var["sections"] = [",".join(s for s in genes_per if g in genes_per[s]) for g in adata.var_names]
    st.pp.normalize(adata)
    st.pp.select_genes(adata, n_top=300)
    p = adata.uns["sthinge_genes"]["params"]
    assert 80 <= p["n_genes"] <= 300
    assert p["n_not_in_vocab"] > 0 and len(p["renamed"]) > 0
    panel = list(adata.uns["sthinge_genes"]["genes"])
    st.pp.select_genes(adata, n_top=300)
    assert adata.uns["sthinge_genes"]["genes"] == panel
    print(
        f"Her2ST C2-C6: {p['n_genes']} genes; input {p['n_input']}, not in vocab {p['n_not_in_vocab']}, "
        f"renamed {len(p['renamed'])}, absent {p['n_absent']}, not top {p['n_not_top']}"
    )
