"""Silent oddities: inputs that used to run and give a quietly wrong or wasteful result.

Genes without any expression on the training spots went into the panel (nothing can be learned about them);
repeated spot ids got embeddings that cannot be told apart downstream (repeated instance ids even the same one);
a fold or section named twice was run twice. Such input is now refused before any work, naming the argument and
the repeats, and leaves the user's object as it was; where input is accepted instead (all-zero genes left out of
an automatic panel), the tests at the end check the result.
"""

from __future__ import annotations

import numpy as np
import pytest
from bad_input_suite import FIT, Registry, _dense, run_case

import sthinge as st
from sthinge import _constants as K

REGISTRY = Registry()
case = REGISTRY.case


def _with_zero_gene(a, gene: str, sections=None):
    """Set ``gene`` to zero (counts and normalised layer) on the spots of ``sections`` (default all)."""
    rows = np.ones(a.n_obs, bool) if sections is None else a.obs["section"].astype(str).isin(sections).to_numpy()
    col = a.var_names.get_loc(gene)
    for name in ("X", K.NORM_LAYER):
        m = _dense(a.X if name == "X" else a.layers[name]).copy()
        m[rows, col] = 0
        if name == "X":
            a.X = m
        else:
            a.layers[name] = m
    return a


# ---------------------------------------------------------------------------------------------------------------
# 8. genes without expression on the training spots
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"1 gene\(s\) of `genes` have no expression on any training spot \(`train_sections`\), so they "
    r"cannot be learned: \['HOXD10'\]",
)
def select_explicit_all_zero_gene(env):
    a = _with_zero_gene(env.adata, "HOXD10")
    return a, lambda: st.pp.select_genes(a, genes=["AEBP2", "HOXD10", "ORC6"])


@case(ValueError, r"1 gene\(s\) of `genes` have no expression on any training spot .*: \['ORC6'\]")
def select_explicit_gene_zero_on_training_sections(env):
    a = _with_zero_gene(env.adata, "ORC6", sections=["S1"])
    return a, lambda: st.pp.select_genes(a, genes=["AEBP2", "ORC6"], train_sections=["S1"])


@case(ValueError, r"`genes` is empty; give the genes of the panel, or None")
def select_empty_genes(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, genes=[])


# ---------------------------------------------------------------------------------------------------------------
# 9. repeated spot ids and instance ids in embed_histology
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"The table's `obs_names` \(spot ids\) are not unique: 1 repeated, e\.g\. \['S1_0x0'\].*"
    r"`\.obs_names_make_unique\(\)`",
)
def embed_duplicated_obs_names(env):
    table = env.sdata.tables[K.TABLE_KEY]
    names = list(table.obs_names)
    names[5] = names[0]
    table.obs_names = names
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


@case(ValueError, r"The table's `obs_names` \(spot ids\) are not unique: 1 repeated, e\.g\. \['a'\]")
def embed_duplicated_obs_names_visium(env):
    a = env.visium(spots=[(20.0, 20.0), (40.0, 30.0), (30.0, 40.0)])
    a.obs_names = ["a", "b", "a"]
    return a, lambda: st.pp.embed_histology(a)


@case(
    ValueError,
    r"1 instance id\(s\) of `obs\['spot_id'\]` repeat within region 'S1_spots' \(section 'S1'\), "
    r"e\.g\. \[0\]: these spots would share one shape and one embedding",
)
def embed_repeated_instance_ids(env):
    table = env.sdata.tables[K.TABLE_KEY]
    ids = table.obs["spot_id"].to_numpy().copy()
    ids[3] = ids[0]
    table.obs["spot_id"] = ids
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


@case(ValueError, r"The shapes element 'S2_spots' has repeated index values \(instance ids\), e\.g\. \[0\]")
def embed_repeated_shape_ids(env):
    shapes = env.sdata.shapes["S2_spots"]
    index = shapes.index.to_numpy().copy()
    index[1] = index[0]
    shapes.index = index
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


# ---------------------------------------------------------------------------------------------------------------
# 10. a fold or section named twice
# ---------------------------------------------------------------------------------------------------------------
def _cv(data, **kwargs):
    return lambda: st.tl.cross_validate(data, method="ridge", embedding_key="X_test", n_top=12, **kwargs)


@case(ValueError, r"`folds` names the held-out section\(s\) \['S1'\] more than once; give each held-out section once")
def crossval_repeated_fold(env):
    return env.sdata, _cv(env.sdata, folds=["S1", "S1"])


@case(ValueError, r"`folds` names the held-out section\(s\) \['S2'\] more than once")
def crossval_section_in_two_folds(env):
    return env.sdata, _cv(env.sdata, folds=[["S2"], "S2"])


@case(ValueError, r"`folds` names the held-out section\(s\) \['S1'\] more than once")
def crossval_section_twice_in_one_fold(env):
    return env.sdata, _cv(env.sdata, folds=[["S1", "S1"]])


@case(ValueError, r"`sections` names the section\(s\) \['S1'\] more than once")
def crossval_repeated_sections(env):
    return env.sdata, _cv(env.sdata, sections=["S1", "S2", "S1"])


@case(ValueError, r"`train_sections` names the section\(s\) \['S1'\] more than once")
def fit_repeated_train_sections(env):
    return env.sdata, lambda: st.tl.fit(env.sdata, **FIT, max_epochs=1, train_sections=["S1", "S1"])


@case(ValueError, r"`train_sections` is empty; give at least one section, or None for all")
def fit_empty_train_sections(env):
    return env.sdata, lambda: st.tl.fit(env.sdata, **FIT, max_epochs=1, train_sections=[])


@case(ValueError, r"`sections` names the section\(s\) \['S2'\] more than once")
def predict_repeated_sections(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=2, sections=["S2", "S2"])


@case(ValueError, r"`train_sections` names the section\(s\) \['S2'\] more than once")
def baseline_repeated_train_sections(env):
    return env.sdata, lambda: st.tl.fit_baseline(env.sdata, embedding_key="X_test", train_sections=["S2", "S1", "S2"])


@case(ValueError, r"`train_sections` names the section\(s\) \['S1'\] more than once")
def select_repeated_train_sections(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, train_sections=["S1", "S1"])


@case(ValueError, r"`train_sections` is empty")
def select_empty_train_sections(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, train_sections=[])


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 15


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_input(env, make, exc, match):
    run_case(env, make, exc, match)


# ---------------------------------------------------------------------------------------------------------------
# accepted, with the right result
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_top", [12, 5])
def test_all_zero_genes_are_left_out_of_the_panel(env, n_top):
    zero = ["HOXD10", "SSNA1"]
    a = env.adata
    for gene in zero:
        _with_zero_gene(a, gene)
    st.pp.select_genes(a, n_top=n_top)
    panel = list(a.uns[K.GENES_KEY]["genes"])
    assert panel and not set(zero) & set(panel)
    assert a.uns[K.GENES_KEY]["params"]["n_zero"] == len(zero)
    # the same panel as from the same data without those genes
    rest = a[:, [g for g in a.var_names if g not in zero]].copy()
    st.pp.select_genes(rest, n_top=n_top)
    assert rest.uns[K.GENES_KEY]["genes"] == panel


def test_genes_without_expression_on_the_training_sections_are_left_out(env):
    a = _with_zero_gene(env.adata, "ORC6", sections=["S1"])
    st.pp.select_genes(a, n_top=12, train_sections=["S1"])
    assert "ORC6" not in a.uns[K.GENES_KEY]["genes"] and len(a.uns[K.GENES_KEY]["genes"]) == 11
    st.pp.select_genes(a, n_top=12)  # expressed on S2, so a gene of the panel over both sections
    assert "ORC6" in a.uns[K.GENES_KEY]["genes"]
