"""Regression baselines and cross-validation on tiny synthetic data."""

import numpy as np
import pandas as pd
import pytest

import sthinge as st
from sthinge import _constants as K
from sthinge.tl._baselines import BaselineModel, fit_baseline, predict_baseline
from sthinge.tl._crossval import cross_validate
from sthinge.tl._evaluate import compare, evaluate

EMB = "X_test"


def _linear_sdata(seed=0):
    """3 sections x 36 spots; the normalised layer is exactly linear in the embedding."""
    from sthinge.pp._normalize import normalize

    sdata = st.datasets.synthetic(n_sections=3, n_spots=36, n_genes=12, image=False, seed=seed)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(seed)
    emb = rng.uniform(0, 1, size=(table.n_obs, 6)).astype(np.float32)
    weights = rng.uniform(0.2, 1.0, size=(6, table.n_vars))
    table.obsm[EMB] = emb
    table.layers[K.NORM_LAYER] = (2.0 + emb @ weights).astype(np.float32)
    table.uns[K.GENES_KEY] = list(table.var_names)
    return sdata


def _synthetic_sdata(seed=0):
    """The brief's set-up: synthetic data, normalised, embedding = true factors + noise."""
    from sthinge.pp._normalize import normalize

    sdata = st.datasets.synthetic(n_sections=3, n_spots=36, n_genes=12, image=False, seed=seed)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(seed)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 3))].astype(np.float32)
    return sdata


def _snapshot(sdata):
    table = sdata.tables[K.TABLE_KEY]
    return (
        set(sdata.tables),
        set(table.obsm),
        set(table.uns),
        set(table.layers),
        set(table.var.columns),
        float(np.asarray(table.layers[K.NORM_LAYER].sum())),
    )


def test_ridge_recovers_linear_relation_on_held_out_section():
    sdata = _linear_sdata()
    model = fit_baseline(sdata, method="ridge", embedding_key=EMB, train_sections=["S1", "S2"])
    assert isinstance(model, BaselineModel) and model.train_sections == ["S1", "S2"]
    predict_baseline(sdata, model, sections=["S3"])
    res = evaluate(sdata, pred_key="ridge", metrics=["pcc10", "mse"])
    assert list(res.index) == ["S3"]
    assert res.loc["S3", "pcc10"] > 0.99 and res.loc["S3", "mse"] < 1e-2
    # a Gaussian std from held-out residuals: evaluate reports the calibration of its intervals
    # (split-conformal from the same residuals: the 50 / 90 % layers, the other levels from the stored calibration)
    assert res.loc["S3", "interval_method"] == "layers(50,90)+conformal(80,95)"
    assert res.loc["S3", "crps_method"] == "gaussian"
    assert np.isfinite(res.loc["S3", ["coverage90", "crps", "width90"]].astype(float)).all()
    assert model.params["std_method"] == "section-folds:2"


def test_baseline_output_has_the_predict_format():
    sdata = _linear_sdata()
    model = fit_baseline(sdata, method="knn", embedding_key=EMB, train_sections=["S1", "S2"], n_neighbors=[1, 3, 5])
    assert model.params["n_neighbors"] in (1, 3, 5)
    predict_baseline(sdata, model, sections="S3", key_added="knn_pred")
    pred = sdata.tables["knn_pred"]
    assert list(pred.var_names) == model.genes and pred.shape == (36, 12)
    assert np.isfinite(pred.X).all() and pred.X.shape == (36, 12)
    # the mean is X alone (no copy of it in a layer); the Gaussian std per gene, the same for every spot
    assert "knn_pred" not in pred.layers
    std = pred.layers["knn_pred" + K.STD_SUFFIX]
    np.testing.assert_allclose(std, np.broadcast_to(model.resid_std, (36, 12)))
    assert (model.resid_std > 0).all()
    assert (pred.obs[K.SECTION_KEY] == "S3").all()
    attrs = pred.uns["spatialdata_attrs"]
    assert attrs["region"] in ("S3_spots", ["S3_spots"]) and attrs["instance_key"] == K.INSTANCE_KEY
    assert pred.uns["knn_pred"]["source_table"] == K.TABLE_KEY
    assert pred.uns["knn_pred"]["training_layer"] == K.NORM_LAYER
    np.testing.assert_array_equal(pred.obsm[K.SPATIAL_KEY], sdata.tables[K.TABLE_KEY].obsm[K.SPATIAL_KEY][72:])
    # AnnData input: obsm DataFrames with NaN for rows not predicted
    adata = sdata.tables[K.TABLE_KEY].copy()
    predict_baseline(adata, model, sections=["S3"])
    mean = adata.obsm["knn"]
    assert list(mean.columns) == model.genes and mean.shape == (108, 12)
    assert mean.iloc[:72].isna().all().all() and np.isfinite(mean.iloc[72:].to_numpy()).all()
    std = adata.obsm["knn" + K.STD_SUFFIX]
    assert list(std.columns) == model.genes and std.iloc[:72].isna().all().all()
    res = evaluate(adata, pred_key="knn", metrics=["pcc10"])
    assert list(res.index) == ["S3"] and res.loc["S3", "pcc10"] > 0.5 and "coverage90" in res
    # a model without a std (e.g. built by hand) writes none, and leaves no stale std beside its mean
    model.resid_std = None
    predict_baseline(adata, model, sections=["S3"], overwrite=True)
    assert "knn" + K.STD_SUFFIX not in adata.obsm
    assert "coverage90" not in evaluate(adata, pred_key="knn", metrics=["pcc10"])
    # inplace=False returns the table and writes nothing
    out = predict_baseline(sdata, model, sections=["S3"], key_added="other", inplace=False)
    assert out.shape == (36, 12) and "other" not in sdata.tables


def test_mlp_baseline_runs_and_keeps_history():
    sdata = _linear_sdata()
    model = fit_baseline(
        sdata, method="mlp", embedding_key=EMB, train_sections=["S1", "S2"], hidden_layer_sizes=(16,), max_iter=30
    )
    assert 1 <= len(model.history) <= 30 and "train_loss" in model.history[0]
    predict_baseline(sdata, model, sections=["S3"])
    assert np.isfinite(evaluate(sdata, pred_key="mlp", metrics=["mse"]).loc["S3", "mse"])


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"method": "svm"}, ValueError, "method"),
        ({"embedding_key": "X_nope"}, KeyError, "embedding_key"),
        ({"train_sections": ["S9"]}, ValueError, "train_sections"),
        ({"genes_key": "nope"}, KeyError, "genes_key"),
        ({"alphas": [0.0]}, ValueError, "alphas"),
    ],
)
def test_fit_baseline_errors(kwargs, err, match):
    sdata = _linear_sdata()
    with pytest.raises(err, match=match):
        fit_baseline(sdata, **{"embedding_key": EMB, **kwargs})


def test_predict_baseline_embedding_mismatch():
    sdata = _linear_sdata()
    model = fit_baseline(sdata, method="ridge", embedding_key=EMB)
    table = sdata.tables[K.TABLE_KEY]
    with pytest.raises(ValueError, match="key_added"):
        predict_baseline(sdata, model, key_added=K.TABLE_KEY)
    table.obsm[EMB] = table.obsm[EMB][:, :3]
    with pytest.raises(ValueError, match="features"):
        predict_baseline(sdata, model)
    assert set(sdata.tables) == {K.TABLE_KEY}


def test_cross_validate_ridge_one_row_per_fold_and_data_unchanged():
    sdata = _synthetic_sdata()
    before = _snapshot(sdata)
    cv = cross_validate(sdata, method="ridge", embedding_key=EMB, n_top=12, metrics=["pcc10", "mse", "ssim"])
    assert _snapshot(sdata) == before
    assert list(cv.index) == ["S1", "S2", "S3"] and (cv["method"] == "ridge").all()
    assert list(cv["fold"]) == ["S1", "S2", "S3"] and (cv["n_train_sections"] == 2).all()
    assert cv["pcc10"].between(0.3, 1.0).all() and (cv["n_spots"] == 36).all()
    details = cv.attrs["details"]
    assert len(details.per_gene) == int(cv["n_panel"].sum())
    assert set(details.per_gene["fold"]) == {"S1", "S2", "S3"} and set(details.panels) == {"S1", "S2", "S3"}
    assert details.histories == {}  # baselines have no training history
    # a knn run on the same folds compares row by row, and the two concatenate for plotting
    knn = cross_validate(sdata, method="knn", embedding_key=EMB, n_top=12, folds=["S1", "S3"], metrics=["pcc10"])
    assert list(knn.index) == ["S1", "S3"]
    assert compare(cv, knn, metric="pcc10")["n"] == 2
    assert pd.concat([cv, knn]).shape[0] == 5


def test_cross_validate_errors_leave_data_unchanged():
    sdata = _synthetic_sdata()
    before = _snapshot(sdata)
    with pytest.raises(ValueError, match="folds"):
        cross_validate(sdata, method="ridge", embedding_key=EMB, folds=["S7"])
    with pytest.raises(ValueError, match="method"):
        cross_validate(sdata, method="lasso", embedding_key=EMB)
    with pytest.raises(ValueError, match="fit_kwargs"):
        cross_validate(sdata, method="ridge", embedding_key=EMB, fit_kwargs={"train_sections": ["S1"]})
    with pytest.raises(ValueError, match="metrics"):
        cross_validate(sdata, method="ridge", embedding_key=EMB, metrics=["auc"])
    with pytest.raises(KeyError, match="embedding_key"):
        cross_validate(sdata, method="ridge", embedding_key="X_missing")
    assert _snapshot(sdata) == before


@pytest.mark.slow
def test_cross_validate_hinge_one_fold(monkeypatch):
    monkeypatch.setattr(st.settings, "verbosity", 1)
    sdata = _synthetic_sdata()
    before = _snapshot(sdata)
    cv = cross_validate(
        sdata,
        method="hinge",
        folds=["S3"],
        embedding_key=EMB,
        n_top=12,
        metrics=["pcc50", "mse"],
        fit_kwargs=dict(backbone="tiny", max_epochs=1, min_epochs=0, val_metric="loss"),
        predict_kwargs=dict(n_steps=2, n_samples=2),
    )
    assert _snapshot(sdata) == before
    assert list(cv.index) == ["S3"] and cv.loc["S3", "method"] == "hinge"
    assert np.isfinite(cv.loc["S3", "mse"]) and cv.loc["S3", "coverage90_method"] == "layers"  # conformal, from fit
    (history,) = cv.attrs["details"].histories.values()  # the fold's training history, one entry per epoch
    assert len(history) == 1 and {"epoch", "train_loss", "val"} <= set(history[0])


def _linear_gaussian_adata(n_sections=6, n_spots=150, n_genes=8, dim=5, noise=0.5, seed=0):
    """AnnData whose log expression is linear in the embedding plus Gaussian noise of known SD."""
    import anndata as ad

    rng = np.random.default_rng(seed)
    n = n_sections * n_spots
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    weights = rng.uniform(0.2, 1.0, size=(dim, n_genes))
    expr = 10.0 + emb @ weights + rng.normal(0.0, noise, size=(n, n_genes))
    obs = pd.DataFrame(
        {K.SECTION_KEY: np.repeat([f"S{i + 1}" for i in range(n_sections)], n_spots)},
        index=[f"spot{i}" for i in range(n)],
    )
    adata = ad.AnnData(X=expr.astype(np.float32), obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(n_genes)]))
    adata.layers[K.NORM_LAYER] = expr.astype(np.float32)
    adata.uns[K.UNS_NORMALIZE] = {"key_added": K.NORM_LAYER, "transform": "log1p_cp10k"}
    adata.uns[K.GENES_KEY] = list(adata.var_names)
    adata.obsm[EMB] = emb
    return adata


def test_ridge_gaussian_std_covers_held_out_spots():
    """Linear-Gaussian data: ridge's std (held-out residuals) is about the noise SD and its 90 % interval covers
    about 90 % of the spots of an unseen section."""
    adata = _linear_gaussian_adata()
    train = ["S1", "S2", "S3", "S4", "S5"]
    model = fit_baseline(adata, method="ridge", embedding_key=EMB, train_sections=train)
    assert model.params["std_method"] == "section-folds:5"
    np.testing.assert_allclose(model.resid_std, 0.5, rtol=0.1)
    predict_baseline(adata, model, sections=["S6"])
    res = evaluate(adata, pred_key="ridge", metrics=["mse"])
    assert 0.85 <= res.loc["S6", "coverage90"] <= 0.95  # split-conformal on the same held-out residuals
    assert res.loc["S6", "interval_method"] == "layers(50,90)+conformal(80,95)"
    model.calibration = None  # the Gaussian interval mean +- 1.645 std covers about 90 % too
    predict_baseline(adata, model, sections=["S6"], levels=None, overwrite=True)
    res = evaluate(adata, pred_key="ridge", metrics=["mse"])
    assert 0.85 <= res.loc["S6", "coverage90"] <= 0.95 and res.loc["S6", "interval_method"] == "gaussian"
    # the std is laid out for a later per-gene calibration factor
    model.std_scale = np.full(model.n_genes, 2.0)
    np.testing.assert_allclose(model.predict_std_array(3), np.broadcast_to(2 * model.resid_std, (3, model.n_genes)))


@pytest.mark.parametrize("method", ["knn", "mlp"])
def test_knn_and_mlp_get_a_held_out_std(method):
    adata = _linear_gaussian_adata(n_sections=3, n_spots=60, n_genes=4)
    kwargs = {"n_neighbors": [5, 10]} if method == "knn" else {"hidden_layer_sizes": (8,), "max_iter": 30}
    model = fit_baseline(adata, method=method, embedding_key=EMB, train_sections=["S1", "S2"], **kwargs)
    assert model.resid_std.shape == (4,) and (model.resid_std > 0).all()
    assert model.params["std_method"] == ("section-folds:2" if method == "knn" else "section-folds:1")
    predict_baseline(adata, model, sections=["S3"])
    res = evaluate(adata, pred_key=method, metrics=["mse"])
    assert 0.0 < res.loc["S3", "coverage90"] <= 1.0 and np.isfinite(res.loc["S3", "crps"])


def test_single_section_uses_random_spot_folds():
    adata = _linear_gaussian_adata(n_sections=1, n_spots=200, n_genes=3)
    model = fit_baseline(adata, method="ridge", embedding_key=EMB)
    assert model.params["std_method"] == "spot-folds:5"
    np.testing.assert_allclose(model.resid_std, 0.5, rtol=0.2)
