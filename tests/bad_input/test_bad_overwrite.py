"""Overwriting what the user owns: no writer replaces an existing table, obsm / layers key, file or non-empty folder
unless the user passes ``overwrite=True``; ``key_added`` never names the table being read, the coordinates or the
input embedding, not even with ``overwrite=True``.

Each refusal names the thing and the flag, is raised before any work, and leaves the user's object (or file) exactly
as it was. The tests at the end check that ``overwrite=True``, ``copy=True`` and ``inplace=False`` do what they say,
with the same result as writing afresh.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from bad_input_suite import EMB, FIT, Registry, assert_unchanged, run_case, snapshot

import sthinge as st
from sthinge import _constants as K

REGISTRY = Registry()
case = REGISTRY.case
PRED = dict(n_steps=2, seed=0)


def _with_prediction(env, key=K.PRED_KEY):
    st.tl.predict(env.sdata, env.model, key_added=key, **PRED)
    return env.sdata


# ---------------------------------------------------------------------------------------------------------------
# tl.predict / tl.predict_baseline: tables and obsm keys
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"`key_added` 'mine': table 'mine' already exists; pass `overwrite=True`")
def predict_over_users_table(env):
    sdata = env.sdata
    sdata.tables["mine"] = ad.AnnData(np.arange(6, dtype=np.float32).reshape(3, 2))  # the user's own table
    return sdata, lambda: st.tl.predict(sdata, env.model, key_added="mine", **PRED)


@case(ValueError, r"`key_added` 'sthinge': table 'sthinge' already exists; pass `overwrite=True`")
def predict_twice_same_key(env):
    sdata = _with_prediction(env)
    return sdata, lambda: st.tl.predict(sdata, env.model, **PRED)


@case(ValueError, r"`key_added` 'table' names the table being read \(`table_key`\); it is never replaced")
def predict_over_source_table_even_with_overwrite(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, key_added="table", overwrite=True, **PRED)


@case(ValueError, r"`key_added` 'S1_spots' names an existing shape element")
def predict_key_names_shapes_element(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, key_added="S1_spots", overwrite=True, **PRED)


@case(ValueError, r"`key_added` 'S1_image' names an existing image element")
def predict_key_names_image_element(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, key_added="S1_image", **PRED)


@case(ValueError, r"`key_added` 'spatial' would write `obsm\['spatial'\]`, the spot coordinates; it is never")
def predict_anndata_over_coordinates(env):
    return env.adata, lambda: st.tl.predict(env.adata, env.model, key_added="spatial", overwrite=True, **PRED)


@case(ValueError, r"`key_added` 'X_test' would write `obsm\['X_test'\]`, the model's input embedding; it is never")
def predict_anndata_over_input_embedding(env):
    return env.adata, lambda: st.tl.predict(env.adata, env.model, key_added=EMB, overwrite=True, **PRED)


@case(ValueError, r"`key_added` 's1_IMAGE' names an existing image element 'S1_image'")
def predict_key_is_case_variant_of_an_image(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, key_added="s1_IMAGE", **PRED)


@case(ValueError, r"`key_added` 'Table' names an existing table element 'table'")
def predict_key_is_case_variant_of_the_source(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, key_added="Table", overwrite=True, **PRED)


@case(FileExistsError, r"`save` '.*backbone\.pt' already exists; pass `overwrite=True`")
def pretrain_over_users_file(env):
    path = env.tmp / "backbone.pt"
    path.write_bytes(b"a backbone that took a day to train")
    return path, lambda: st.tl.pretrain_backbone(env.sdata, max_epochs=1, save=path)


@case(ValueError, r"`key_added` 'mine': `obsm\['mine_std'\]` already exists; pass `overwrite=True`")
def predict_anndata_over_std_key(env):
    a = env.adata
    a.obsm["mine_std"] = np.zeros((a.n_obs, 2), np.float32)  # only the std key exists
    return a, lambda: st.tl.predict(a, env.model, key_added="mine", **PRED)


@case(ValueError, r"`key_added` 'mine' names the table being read \(`table_key`\)")
def predict_over_named_source_table(env):
    sdata = env.sdata
    sdata.tables["mine"] = sdata.tables.pop(K.TABLE_KEY)  # the source table under another name
    return sdata, lambda: st.tl.predict(sdata, env.model, table_key="mine", key_added="mine", overwrite=True, **PRED)


@case(TypeError, r"`overwrite` must be True or False, got 'yes'")
def predict_overwrite_not_bool(env):
    sdata = _with_prediction(env)
    return sdata, lambda: st.tl.predict(sdata, env.model, overwrite="yes", **PRED)


@case(ValueError, r"`key_added` 'ridge': table 'ridge' already exists; pass `overwrite=True`")
def predict_baseline_twice(env):
    ridge = st.tl.fit_baseline(env.sdata, embedding_key=EMB)
    st.tl.predict_baseline(env.sdata, ridge)
    return env.sdata, lambda: st.tl.predict_baseline(env.sdata, ridge)


@case(ValueError, r"`key_added` 'spatial' would write `obsm\['spatial'\]`")
def predict_baseline_anndata_over_coordinates(env):
    ridge = st.tl.fit_baseline(env.sdata, embedding_key=EMB)
    return env.adata, lambda: st.tl.predict_baseline(env.adata, ridge, key_added="spatial", overwrite=True)


# ---------------------------------------------------------------------------------------------------------------
# pp.embed_histology / pp.normalize: obsm and layers
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"`key_added` 'X_test': `obsm\['X_test'\]` already exists; pass `overwrite=True`")
def embed_over_existing_embedding(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, key_added=EMB)


@case(ValueError, r"`key_added` 'X_he-stats': `obsm\['X_he-stats'\]` already exists; pass `overwrite=True`")
def embed_twice_default_key(env):
    st.pp.embed_histology(env.sdata)
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


@case(ValueError, r"`key_added` 'spatial' names the spot coordinates `obsm\['spatial'\]`; they are never replaced")
def embed_over_coordinates_even_with_overwrite(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, key_added="spatial", overwrite=True)


@case(ValueError, r"`key_added` 'spatial' names the spot coordinates")
def embed_over_coordinates_in_a_copy(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, key_added="spatial", copy=True)


@case(ValueError, r"`key_added` 'sthinge_log1p': `layers\['sthinge_log1p'\]` already exists; pass `overwrite=True`")
def normalize_twice(env):
    return env.adata, lambda: st.pp.normalize(env.adata)


@case(ValueError, r"`key_added` 'counts' names the layer holding the counts \(`layer`\); it is never replaced")
def normalize_over_its_counts(env):
    a = env.raw()
    a.layers["counts"] = a.X.copy()
    return a, lambda: st.pp.normalize(a, layer="counts", key_added="counts", overwrite=True)


# ---------------------------------------------------------------------------------------------------------------
# files: checkpoints, figures, backbone and MindSpore files
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"`checkpoint_dir` '.*ckpts': the checkpoint '.*last\.ckpt' of an earlier fit already exists; "
    r"pass `resume=True` to continue from it, or `overwrite=True` to replace it",
)
def fit_over_earlier_checkpoint(env):
    folder = env.tmp / "ckpts"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"an earlier fit's state")
    return folder, lambda: st.tl.fit(env.sdata, **{**FIT, "max_epochs": 1}, checkpoint_dir=folder)


@case(FileExistsError, r"`save` '.*history\.png' already exists; pass `overwrite=True`")
def plot_over_existing_figure(env):
    path = env.tmp / "history.png"
    path.write_bytes(b"the user's figure")
    return path, lambda: st.pl.history(env.model, save=path)


@case(FileExistsError, r"`save` '.*' is an existing folder; give a file name")
def plot_over_a_folder(env):
    folder = env.tmp / "figs"
    folder.mkdir()
    (folder / "keep.txt").write_text("keep")
    return folder, lambda: st.pl.history(env.model, save=folder, overwrite=True)


@case(FileExistsError, r"`path` '.*w\.ckpt' already exists; pass `overwrite=True`")
def mindspore_writer_over_existing_file(env):
    from sthinge.io import write_mindspore_ckpt

    path = env.tmp / "w.ckpt"
    path.write_bytes(b"someone's weights")
    return path, lambda: write_mindspore_ckpt(path, {"x": np.ones(3, np.float32)})


@case(FileExistsError, r"`path` '.*hinge\.pt' already exists; pass `overwrite=True`")
def module_save_over_existing_file(env):
    path = env.tmp / "hinge.pt"
    path.write_bytes(b"another model")
    return path, lambda: env.model.module.save(path)


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 20


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_input(env, make, exc, match):
    run_case(env, make, exc, match)


# ---------------------------------------------------------------------------------------------------------------
# what overwrite=True, copy=True and inplace=False do: the same result as writing afresh
# ---------------------------------------------------------------------------------------------------------------
def test_predict_overwrite_replaces_with_the_fresh_result(env):
    fresh = st.tl.predict(env.sdata, env.model, inplace=False, **PRED)
    st.tl.predict(env.sdata, env.model, n_steps=3, seed=5)  # a different earlier prediction
    st.tl.predict(env.sdata, env.model, overwrite=True, **PRED)
    np.testing.assert_array_equal(env.sdata.tables[K.PRED_KEY].X, fresh.X)
    np.testing.assert_array_equal(env.sdata.tables[K.PRED_KEY].layers["sthinge_std"], fresh.layers["sthinge_std"])


def test_predict_not_inplace_needs_no_overwrite_and_changes_nothing(env):
    sdata = _with_prediction(env)
    before = snapshot(sdata)
    pred = st.tl.predict(sdata, env.model, inplace=False, **PRED)
    assert_unchanged(before, sdata)
    np.testing.assert_array_equal(pred.X, sdata.tables[K.PRED_KEY].X)


def test_predict_anndata_overwrite(env):
    a = env.adata
    st.tl.predict(a, env.model, **PRED)
    first = a.obsm[K.PRED_KEY].copy()
    st.tl.predict(a, env.model, overwrite=True, **PRED)
    np.testing.assert_array_equal(a.obsm[K.PRED_KEY].to_numpy(), first.to_numpy())


def test_embed_overwrite_gives_the_fresh_embedding(env):
    st.pp.embed_histology(env.sdata)
    table = env.sdata.tables[K.TABLE_KEY]
    fresh = table.obsm["X_he-stats"].copy()
    table.obsm["X_he-stats"] = np.zeros_like(fresh)
    st.pp.embed_histology(env.sdata, overwrite=True)
    np.testing.assert_array_equal(table.obsm["X_he-stats"], fresh)


def test_normalize_overwrite_and_copy(env):
    a = env.adata
    reference = a.layers[K.NORM_LAYER].copy()
    a.layers[K.NORM_LAYER] = reference * 0
    out = st.pp.normalize(a, copy=True)  # a copy needs no overwrite and leaves `a` as it is
    assert not _dense(a.layers[K.NORM_LAYER]).any()
    st.pp.normalize(a, overwrite=True)
    for x in (a.layers[K.NORM_LAYER], out.layers[K.NORM_LAYER]):
        np.testing.assert_array_equal(_dense(x), _dense(reference))


def test_fit_checkpoint_overwrite_starts_afresh(env, monkeypatch):
    monkeypatch.setattr(st.settings, "verbosity", 0)
    folder = env.tmp / "ckpts"
    folder.mkdir()
    (folder / "last.ckpt").write_bytes(b"an earlier fit's state")
    (folder / "notes.txt").write_text("the user's notes")
    st.tl.fit(env.sdata, **{**FIT, "max_epochs": 1}, checkpoint_dir=folder, overwrite=True)
    assert (folder / "notes.txt").read_text() == "the user's notes"
    state = torch.load(folder / "last.ckpt", weights_only=True)
    assert isinstance(state, dict) and state.get("epoch") == 0


def test_plot_overwrite_replaces_the_file(env):
    path = env.tmp / "history.png"
    path.write_bytes(b"old")
    st.pl.history(env.model, save=path, overwrite=True)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _dense(x):
    import scipy.sparse as sp

    return x.toarray() if sp.issparse(x) else np.asarray(x)
