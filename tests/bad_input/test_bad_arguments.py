"""Bad arguments: wrong types, out-of-range values, missing keys and malformed inputs to every public function.

Each call must raise a clear error of the right type whose message names the offending argument, and leave the
user's object exactly as it was. Where an input should be accepted (integer vs float counts, sparse vs dense,
float64 vs float32, a DataFrame vs an array), the tests at the end check that it is, and that the result is the
same. The other classes of the suite are in the files beside this one (``test_bad_*.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from bad_input_suite import EMB, FIT, Registry, _dense, assert_unchanged, run_case, snapshot

import sthinge as st
from sthinge import _constants as K

REGISTRY = Registry()
case = REGISTRY.case


def test_snapshot_sees_changes(sdata):
    """The snapshot must notice in-place changes, or the suite below would prove nothing."""
    table = sdata.tables["table"]
    before = snapshot(sdata)
    assert_unchanged(before, sdata)
    for change in (
        lambda: table.X.data.__setitem__(0, table.X.data[0] + 1),  # a value inside a sparse matrix
        lambda: table.obs.__setitem__("section", table.obs["section"].astype(str)),  # a dtype
        lambda: table.obsm["spatial"].__setitem__((0, 0), np.nan),  # a NaN
        lambda: table.uns["sthinge_sections"]["S1"].__setitem__("mpp", 1.0),  # a nested uns value
        lambda: sdata.shapes["S1_spots"].__setitem__("radius", sdata.shapes["S1_spots"]["radius"] * 2),
    ):
        change()
        with pytest.raises(AssertionError):
            assert_unchanged(before, sdata)
        before = snapshot(sdata)


# ---------------------------------------------------------------------------------------------------------------
# pp.normalize
# ---------------------------------------------------------------------------------------------------------------
@case(TypeError, r"`data` must be an AnnData or a SpatialData")
def normalize_wrong_type(env):
    frame = env.adata.to_df()
    return frame, lambda: st.pp.normalize(frame)


@case(ValueError, r"`transform` must be one of")
def normalize_unknown_transform(env):
    a = env.raw()
    return a, lambda: st.pp.normalize(a, transform="log10")


@case(ValueError, r"`X` \(raw counts\) holds 1 NaN")
def normalize_nan_counts(env):
    a = env.raw()
    a.X = _dense(a.X).astype(np.float32)
    a.X[3, 2] = np.nan
    return a, lambda: st.pp.normalize(a)


@case(ValueError, r"`X` \(raw counts\) holds 1 NaN or infinite")
def normalize_inf_counts(env):
    a = env.raw()
    a.X = sp.csr_matrix(_dense(a.X).astype(np.float32))
    a.X.data[0] = np.inf
    return a, lambda: st.pp.normalize(a)


@case(ValueError, r"`X` \(raw counts\) holds 1 negative")
def normalize_negative_counts(env):
    a = env.raw()
    a.X = _dense(a.X).astype(np.int64)
    a.X[0, 0] = -1
    return a, lambda: st.pp.normalize(a)


@case(ValueError, r"non-integer value.*`allow_non_integer=True`")
def normalize_non_integer_counts(env):
    a = env.raw()
    a.X = _dense(a.X).astype(np.float32) + 0.5
    return a, lambda: st.pp.normalize(a)


@case(KeyError, r"`layer` 'counts' not found")
def normalize_missing_layer(env):
    a = env.raw()
    return a, lambda: st.pp.normalize(a, layer="counts")


@case(ValueError, r"`data` has no spots")
def normalize_zero_spots(env):
    a = env.raw()[:0].copy()
    return a, lambda: st.pp.normalize(a)


@case(ValueError, r"`data` has no genes")
def normalize_zero_genes(env):
    a = env.raw()[:, :0].copy()
    return a, lambda: st.pp.normalize(a)


@case(TypeError, r"`copy` must be a bool")
def normalize_copy_not_bool(env):
    a = env.raw()
    return a, lambda: st.pp.normalize(a, copy="yes")


# ---------------------------------------------------------------------------------------------------------------
# pp.select_genes
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"`data` has no spots")
def select_zero_spots(env):
    a = env.adata[:0].copy()
    return a, lambda: st.pp.select_genes(a)


@case(ValueError, r"`data` has no genes")
def select_zero_genes(env):
    a = env.adata[:, :0].copy()
    return a, lambda: st.pp.select_genes(a)


@case(ValueError, r"`obs\['section'\]` \(the `section_key` column\) holds missing values")
def select_missing_section_label(env):
    a = env.adata
    a.obs["section"] = a.obs["section"].astype(object).where(np.arange(a.n_obs) != 3, None)
    return a, lambda: st.pp.select_genes(a, n_top=5)


@case(ValueError, r"`n_top` must be >= 1")
def select_n_top_zero(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, n_top=0)


@case(TypeError, r"`n_top` must be an integer")
def select_n_top_float(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, n_top=10.0)


@case(ValueError, r"`vocab` must be 'cellfm-80m'")
def select_unknown_vocab(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, vocab="cellfm-1b")


@case(ValueError, r"`train_sections` \['S9'\] not found")
def select_unknown_train_section(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, train_sections=["S9"])


@case(KeyError, r"gene\(s\) of `genes` not in the table: \['NOTAGENE'\]")
def select_gene_not_in_table(env):
    genes = [*env.adata.var_names[:3], "NOTAGENE"]
    return env.sdata, lambda: st.pp.select_genes(env.sdata, genes=genes)


@case(ValueError, r"gene panel is empty; check `genes`, `vocab`")
def select_genes_outside_vocabulary(env):
    a = env.adata
    a.var_names = [f"FAKE{i}" for i in range(a.n_vars)]
    return a, lambda: st.pp.select_genes(a, genes=["FAKE0", "FAKE1"])


@case(ValueError, r"`var_names` are not unique.*'[A-Z0-9]+'.*var_names_make_unique")
def select_duplicated_var_names(env):
    a = env.adata
    names = list(a.var_names)
    names[1] = names[0]
    a.var_names = names
    return a, lambda: st.pp.select_genes(a, n_top=5)


@case(ValueError, r"`layers\['sthinge_log1p'\]` holds NaN")
def select_nan_in_normalised_layer(env):
    a = env.adata
    layer = _dense(a.layers["sthinge_log1p"]).copy()
    layer[1, 1] = np.nan
    a.layers["sthinge_log1p"] = layer
    return a, lambda: st.pp.select_genes(a, n_top=5)


@case(KeyError, r"`gene_symbols` 'symbol' is not a var column")
def select_missing_gene_symbols_column(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, gene_symbols="symbol")


@case(TypeError, r"`aliases` must be a dict")
def select_aliases_wrong_type(env):
    return env.sdata, lambda: st.pp.select_genes(env.sdata, aliases=[("OLD", "NEW")])


# ---------------------------------------------------------------------------------------------------------------
# pp.embed_histology
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"Unknown `encoder` 'resnet9000x'")
def embed_unknown_encoder(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, encoder="resnet9000x")


@case(TypeError, r"`encoder` must be a string or a torch.nn.Module, got int")
def embed_encoder_wrong_type(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, encoder=42)


@case(ValueError, r"`tile_size_um` must be > 0")
def embed_tile_size_zero(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, tile_size_um=0)


@case(ValueError, r"`batch_size` must be >= 1")
def embed_batch_size_zero(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, batch_size=0)


@case(ValueError, r"`num_workers` must be >= 0")
def embed_num_workers_negative(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, num_workers=-1)


@case(ValueError, r"`mpp` must be finite")
def embed_mpp_nan(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, mpp=float("nan"))


@case(FileNotFoundError, r"`weights` file '.*nope\.bin' does not exist")
def embed_missing_weights_file(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, encoder="uni", weights=env.tmp / "nope.bin")


@case(KeyError, r"`image_key` 'nope' not found")
def embed_unknown_image_key(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, image_key="nope")


@case(ValueError, r"`transform` and `input_size` apply only")
def embed_transform_with_builtin_encoder(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, transform=lambda x: x)


@case(ValueError, r"1 spot\(s\) of section 'all' lie outside its image \(64 x 64 px\)")
def embed_spot_outside_image(env):
    a = env.visium(spots=[(20.0, 20.0), (500.0, 30.0)])
    return a, lambda: st.pp.embed_histology(a)


@case(ValueError, r"image_key.*'lib/hires' has shape \(3, 64, 64\).*channels first.*\(y, x, c\)")
def embed_image_channels_first(env):
    a = env.visium(image=np.full((3, 64, 64), 200, dtype=np.uint8))
    return a, lambda: st.pp.embed_histology(a)


@case(TypeError, r"image_key.*'lib/hires' has dtype bool.*uint8, uint16 or float")
def embed_image_bool_dtype(env):
    a = env.visium(image=np.ones((64, 64, 3), dtype=bool))
    return a, lambda: st.pp.embed_histology(a)


# ---------------------------------------------------------------------------------------------------------------
# pp.make_grid
# ---------------------------------------------------------------------------------------------------------------
@case(TypeError, r"`data` must be a SpatialData object holding the image, got AnnData")
def grid_on_anndata(env):
    return env.adata, lambda: st.pp.make_grid(env.adata, "S1_image")


@case(KeyError, r"`image_key` 'S9_image' not found")
def grid_unknown_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S9_image")


@case(ValueError, r"`spacing_um` must be > 0")
def grid_negative_spacing(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=-5.0)


# ---------------------------------------------------------------------------------------------------------------
# tl.fit
# ---------------------------------------------------------------------------------------------------------------
def _fit(data, **kwargs):
    return lambda: st.tl.fit(data, **{**FIT, "max_epochs": 1, **kwargs})


@case(ValueError, r"`data` has no spots")
def fit_zero_spots(env):
    a = env.adata[:0].copy()
    return a, _fit(a)


@case(KeyError, r"holds no table")
def fit_spatialdata_without_table(env):
    from spatialdata import SpatialData

    empty = SpatialData(images=dict(env.sdata.images))
    return empty, _fit(empty)


@case(ValueError, r"`obsm\['X_test'\]` holds NaN or infinite")
def fit_nan_embedding(env):
    env.adata.obsm[EMB][4, 1] = np.nan
    return env.adata, _fit(env.adata)


@case(ValueError, r"`obsm\['X_test'\]` holds NaN or infinite")
def fit_inf_embedding(env):
    env.adata.obsm[EMB][0, 0] = -np.inf
    return env.adata, _fit(env.adata)


@case(ValueError, r"`layers\['sthinge_log1p'\]` holds negative values")
def fit_negative_expression(env):
    layer = _dense(env.adata.layers["sthinge_log1p"]).copy()
    layer[2, :] = -1.0
    env.adata.layers["sthinge_log1p"] = layer
    return env.adata, _fit(env.adata)


@case(ValueError, r"`layers\['counts'\]` looks like raw integer counts")
def fit_raw_counts_layer(env):
    env.adata.layers["counts"] = _dense(env.adata.X).astype(np.float32) * 10
    return env.adata, _fit(env.adata, layer="counts")


@case(KeyError, r"`genes_key` 'panel' not found")
def fit_missing_genes_key(env):
    return env.sdata, _fit(env.sdata, genes_key="panel")


@case(KeyError, r"`embedding_key` 'X_uni' not found")
def fit_missing_embedding_key(env):
    return env.sdata, _fit(env.sdata, embedding_key="X_uni")


@case(
    KeyError,
    r"`genes_key` 'sthinge_genes'\) has genes outside the vocabulary of the backbone \(1 of 12 "
    r"gene\(s\) are not in the 27855-token CellFM vocabulary: \['NOTAGENE'\]\); run `pp.select_genes",
)
def fit_panel_outside_backbone_vocabulary(env):
    a = env.adata
    a.var_names = ["NOTAGENE", *a.var_names[1:]]
    st.pp.select_genes(a, vocab=None, n_top=12)
    return a, _fit(a)


@case(ValueError, r"`backbone` must be a preset name .*got 'cellfm-9b'")
def fit_unknown_backbone_preset(env):
    return env.sdata, _fit(env.sdata, backbone="cellfm-9b")


@case(TypeError, r"`backbone` must be a preset name, a backbone module or a path, got float")
def fit_backbone_wrong_type(env):
    return env.sdata, _fit(env.sdata, backbone=3.5)


@case(FileNotFoundError, r"`weights` '.*missing\.pt' not found")
def fit_missing_weights_file(env):
    return env.sdata, _fit(env.sdata, weights=env.tmp / "missing.pt")


@case(ValueError, r"'.*cut\.pt' is truncated or not a valid PyTorch file")
def fit_truncated_backbone_file(env):
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM

    path = save_cellfm(CellFM.from_preset("tiny"), env.tmp / "cut.pt")
    path.write_bytes(path.read_bytes()[:5000])
    return env.sdata, _fit(env.sdata, backbone=path)


@case(ValueError, r"`config` has unknown field\(s\) \['dropuot'\]")
def fit_unknown_config_field(env):
    return env.sdata, _fit(env.sdata, config={"dropuot": 0.2})


@case(ValueError, r"`config`: variant must be one of")
def fit_unknown_variant(env):
    return env.sdata, _fit(env.sdata, config={"variant": "bogus"})


@case(ValueError, r"`batch_size` must be >= 1")
def fit_batch_size_zero(env):
    return env.sdata, _fit(env.sdata, batch_size=0)


@case(TypeError, r"`max_epochs` must be an integer")
def fit_max_epochs_float(env):
    return env.sdata, _fit(env.sdata, max_epochs=2.0)


@case(ValueError, r"`gradient_clip_val` must be > 0")
def fit_negative_gradient_clip(env):
    return env.sdata, _fit(env.sdata, gradient_clip_val=-1.0)


@case(ValueError, r"`lr` must be > 0")
def fit_lr_zero(env):
    return env.sdata, _fit(env.sdata, lr=0.0)


@case(ValueError, r"`val_fraction` must be <= 0.9")
def fit_val_fraction_too_large(env):
    return env.sdata, _fit(env.sdata, val_fraction=0.95)


@case(ValueError, r"`precision` must be one of")
def fit_unknown_precision(env):
    return env.sdata, _fit(env.sdata, precision="fp8")


@case(ValueError, r"`milestones` must be >= 1")
def fit_milestone_zero(env):
    return env.sdata, _fit(env.sdata, milestones=(0, 3))


# ---------------------------------------------------------------------------------------------------------------
# tl.predict
# ---------------------------------------------------------------------------------------------------------------
@case(TypeError, r"`model` must be a HingeModel or the folder of a saved model, got dict")
def predict_model_wrong_type(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, {"state_dict": {}})


@case(FileNotFoundError, r"`model` '.*nowhere' does not exist")
def predict_model_folder_missing(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.tmp / "nowhere")


@case(ValueError, r"`obsm\['X_test'\]` has 3 features but the model was trained on 5")
def predict_embedding_width_mismatch(env):
    env.adata.obsm[EMB] = env.adata.obsm[EMB][:, :3].copy()
    return env.adata, lambda: st.tl.predict(env.adata, env.model, n_steps=2)


@case(ValueError, r"`obsm\['X_test'\]` holds NaN or infinite")
def predict_nan_embedding(env):
    env.adata.obsm[EMB][7, 2] = np.nan
    return env.adata, lambda: st.tl.predict(env.adata, env.model, n_steps=2)


@case(KeyError, r"`embedding_key` 'X_test' not found in `obsm`")
def predict_missing_embedding(env):
    del env.adata.obsm[EMB]
    return env.adata, lambda: st.tl.predict(env.adata, env.model, n_steps=2)


@case(ValueError, r"`data` has no spots to predict")
def predict_zero_spots(env):
    a = env.adata[:0].copy()
    return a, lambda: st.tl.predict(a, env.model, n_steps=2)


@case(ValueError, r"`n_steps` must be <= 50")
def predict_n_steps_too_large(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=51)


@case(ValueError, r"`n_samples` must be >= 1")
def predict_n_samples_zero(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_samples=0)


@case(ValueError, r"`batch_size` must be >= 1")
def predict_batch_size_negative(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, batch_size=-8)


@case(TypeError, r"`seed` must be an integer")
def predict_seed_float(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, seed=1.5)


@case(ValueError, r"`sections` \['S7'\] not found")
def predict_unknown_section(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, sections="S7")


@case(ValueError, r"`table_key` only applies to SpatialData")
def predict_table_key_on_anndata(env):
    return env.adata, lambda: st.tl.predict(env.adata, env.model, table_key="table")


@case(KeyError, r"`table_key` 'tbl' not found")
def predict_unknown_table_key(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, table_key="tbl")


@case(TypeError, r"predict\(\) no longer takes `copy`: pass `inplace=False` to get the prediction table")
def predict_removed_copy(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=2, copy=True)


@case(TypeError, r"`inplace` must be True or False, got 'no'")
def predict_inplace_not_bool(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=2, inplace="no")


# (HingeModel.save / load and the io of CellFM backbones: see test_bad_model_files.py)


# ---------------------------------------------------------------------------------------------------------------
# models
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"preset must be one of .*got 'huge'")
def cellfm_unknown_preset_name(env):
    from sthinge.models import CellFM

    return env.tmp, lambda: CellFM.from_preset("huge")


@case(ValueError, r"n_steps \(the budget K\) must lie in 1\.\.50, got 0")
def sample_zero_steps(env):
    from sthinge.models import sample

    cond = torch.zeros(3, env.model.cond_dim)
    return env.model, lambda: sample(env.model.module, cond, n_steps=0)


@case(ValueError, r"n_samples must be >= 1, got 0")
def sample_zero_samples(env):
    from sthinge.models import sample

    cond = torch.zeros(3, env.model.cond_dim)
    return env.model, lambda: sample(env.model.module, cond, n_samples=0)


@case(ValueError, r"cond must have shape \(n_spots, C\), got \(5,\)")
def sample_cond_one_dimensional(env):
    from sthinge.models import sample

    cond = torch.zeros(env.model.cond_dim)
    return env.model, lambda: sample(env.model.module, cond)


# ---------------------------------------------------------------------------------------------------------------
# datasets
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"`n_sections` must be >= 1")
def synthetic_zero_sections(env):
    return env.tmp, lambda: st.datasets.synthetic(n_sections=0)


@case(TypeError, r"`n_spots` must be an integer")
def synthetic_spots_as_string(env):
    return env.tmp, lambda: st.datasets.synthetic(n_spots="16")


@case(TypeError, r"`image` must be a bool")
def synthetic_image_not_bool(env):
    return env.tmp, lambda: st.datasets.synthetic(image="yes")


@case(ValueError, r"Unknown Her2ST section\(s\) \['Z9'\]; `sections` must be among")
def her2st_unknown_section(env):
    return env.tmp, lambda: st.datasets.her2st("Z9", path=env.tmp)


@case(ValueError, r"`sections` is empty")
def her2st_no_sections(env):
    return env.tmp, lambda: st.datasets.her2st([], path=env.tmp)


@case(TypeError, r"`sections` must be a section name or a list of names")
def her2st_sections_wrong_type(env):
    return env.tmp, lambda: st.datasets.her2st(5, path=env.tmp)


@case(FileNotFoundError, r"`path` '.*empty' does not hold the Her2ST files for \['C2'\]")
def her2st_path_without_files(env):
    folder = env.tmp / "empty"
    folder.mkdir()
    return folder, lambda: st.datasets.her2st("C2", path=folder)


# ---------------------------------------------------------------------------------------------------------------
# pl
# ---------------------------------------------------------------------------------------------------------------
def _predicted(env):
    st.tl.predict(env.sdata, env.model, n_steps=2, sections="S2")
    return env.sdata


@case(KeyError, r"`genes` \['NOTAGENE'\] not in the panel of prediction 'sthinge'")
def spatial_unknown_gene(env):
    sdata = _predicted(env)
    return sdata, lambda: st.pl.spatial(sdata, "NOTAGENE")


@case(ValueError, r"`size` must be a positive number, got -1")
def spatial_negative_size(env):
    sdata = _predicted(env)
    gene = env.model.genes[0]
    return sdata, lambda: st.pl.spatial(sdata, gene, size=-1)


@case(ValueError, r"`size` must be a positive number, got nan")
def spatial_nan_size(env):
    sdata = _predicted(env)
    gene = env.model.genes[0]
    return sdata, lambda: st.pl.spatial(sdata, gene, size=float("nan"))


@case(ValueError, r"`section` 'S9' not found")
def spatial_unknown_section(env):
    sdata = _predicted(env)
    gene = env.model.genes[0]
    return sdata, lambda: st.pl.spatial(sdata, gene, section="S9")


@case(ValueError, r"`model.history` is empty")
def history_empty(env):
    return [], lambda: st.pl.history([])


@case(TypeError, r"`model` must have a `history` list of dicts")
def history_wrong_type(env):
    return env.tmp, lambda: st.pl.history("model")


@case(TypeError, r"`table` must be a DataFrame of results, got dict")
def metrics_not_a_frame(env):
    results = {"pcc50": [0.1, 0.2]}
    return results, lambda: st.pl.metrics(results)


@case(KeyError, r"`metric` 'pcc9' is not a column of `table`")
def metrics_unknown_metric(env):
    frame = pd.DataFrame({"method": ["a", "b"], "pcc50": [0.1, 0.2]})
    return frame, lambda: st.pl.metrics(frame, metric="pcc9")


# ---------------------------------------------------------------------------------------------------------------
# tl.evaluate and the baselines
# ---------------------------------------------------------------------------------------------------------------
@case(KeyError, r"`pred_key` 'ridge': no such prediction table")
def evaluate_missing_prediction(env):
    sdata = _predicted(env)
    return sdata, lambda: st.tl.evaluate(sdata, pred_key="ridge")


@case(KeyError, r"`genes` \['NOTAGENE'\] not in the panel of prediction 'sthinge'")
def evaluate_gene_not_in_panel(env):
    sdata = _predicted(env)
    return sdata, lambda: st.tl.evaluate(sdata, genes=["NOTAGENE"])


@case(KeyError, r"Predicted gene\(s\) \['\w+'\] are not in the source table's `var_names`")
def evaluate_mismatched_gene_panel(env):
    sdata = _predicted(env)
    table = sdata.tables[K.TABLE_KEY]
    gene = env.model.genes[0]
    sdata.tables[K.TABLE_KEY] = table[:, [g for g in table.var_names if g != gene]].copy()
    return sdata, lambda: st.tl.evaluate(sdata)


@case(ValueError, r"source table's `obs_names` are not unique; call `.obs_names_make_unique\(\)`")
def evaluate_duplicated_obs_names(env):
    sdata = _predicted(env)
    table = sdata.tables[K.TABLE_KEY]
    names = list(table.obs_names)
    names[0] = names[1]
    table.obs_names = names
    return sdata, lambda: st.tl.evaluate(sdata)


@case(ValueError, r"`metrics`: 'pcc0' needs k >= 1")
def evaluate_bad_metric(env):
    sdata = _predicted(env)
    return sdata, lambda: st.tl.evaluate(sdata, metrics=["pcc0"])


@case(ValueError, r"`method` must be one of \['ridge', 'mlp', 'knn'\], got 'svm'")
def baseline_unknown_method(env):
    return env.sdata, lambda: st.tl.fit_baseline(env.sdata, method="svm", embedding_key=EMB)


@case(ValueError, r"`obsm\['X_test'\]` has 4 features but the model was trained on 5")
def predict_baseline_width_mismatch(env):
    model = st.tl.fit_baseline(env.sdata, embedding_key=EMB)
    env.adata.obsm[EMB] = env.adata.obsm[EMB][:, :4].copy()
    return env.adata, lambda: st.tl.predict_baseline(env.adata, model)


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 30


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_input(env, make, exc, match):
    run_case(env, make, exc, match)


# ---------------------------------------------------------------------------------------------------------------
# inputs that must be accepted, with the same result
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("form", ["int64", "float32", "float64", "csr_int", "csr_float", "csc_float"])
def test_normalize_accepts_any_count_container(env, form):
    reference = env.raw()
    reference.X = _dense(reference.X).astype(np.int32)
    st.pp.normalize(reference)
    a = env.raw()
    dense = _dense(a.X)
    a.X = {
        "int64": lambda: dense.astype(np.int64),
        "float32": lambda: dense.astype(np.float32),
        "float64": lambda: dense.astype(np.float64),
        "csr_int": lambda: sp.csr_matrix(dense.astype(np.int32)),
        "csr_float": lambda: sp.csr_matrix(dense.astype(np.float32)),
        "csc_float": lambda: sp.csc_matrix(dense.astype(np.float32)),
    }[form]()
    st.pp.normalize(a)
    out = a.layers["sthinge_log1p"]
    assert sp.issparse(out) == form.startswith("cs")
    np.testing.assert_array_equal(_dense(out), _dense(reference.layers["sthinge_log1p"]))


def test_select_genes_sparse_and_dense_agree(env):
    a, b = env.adata.copy(), env.adata.copy()
    b.layers["sthinge_log1p"] = _dense(b.layers["sthinge_log1p"])
    a.layers["sthinge_log1p"] = sp.csr_matrix(_dense(a.layers["sthinge_log1p"]))
    st.pp.select_genes(a, n_top=6)
    st.pp.select_genes(b, n_top=6)
    assert a.uns[K.GENES_KEY]["genes"] == b.uns[K.GENES_KEY]["genes"] and len(a.uns[K.GENES_KEY]["genes"]) > 0


def test_fit_accepts_sparse_layer_and_float64_embedding(env, monkeypatch):
    monkeypatch.setattr(st.settings, "verbosity", 0)
    dense = env.adata.copy()
    dense.layers["sthinge_log1p"] = _dense(dense.layers["sthinge_log1p"]).astype(np.float32)
    other = env.adata.copy()
    other.layers["sthinge_log1p"] = sp.csr_matrix(dense.layers["sthinge_log1p"].astype(np.float64))
    other.obsm[EMB] = pd.DataFrame(dense.obsm[EMB].astype(np.float64), index=other.obs_names)
    a = st.tl.fit(dense, **FIT, max_epochs=1)
    b = st.tl.fit(other, **FIT, max_epochs=1)
    sa, sb = a.module.state_dict(), b.module.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_predict_accepts_frame_and_float64_embedding(env):
    a = env.adata.copy()
    b = env.adata.copy()
    b.obsm[EMB] = pd.DataFrame(a.obsm[EMB].astype(np.float64), index=b.obs_names)
    pa = st.tl.predict(a, env.model, n_steps=3, n_samples=2, seed=1, inplace=False)
    pb = st.tl.predict(b, env.model, n_steps=3, n_samples=2, seed=1, inplace=False)
    np.testing.assert_array_equal(pa.X, pb.X)


def test_embed_accepts_uint8_and_float_images(env):
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    a, b = env.visium(image=img), env.visium(image=img.astype(np.float32) / 255)
    st.pp.embed_histology(a)
    st.pp.embed_histology(b)
    np.testing.assert_array_equal(a.obsm["X_he-stats"], b.obsm["X_he-stats"])
