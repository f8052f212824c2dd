"""evaluate / coexpression / compare against values computed by hand on tiny arrays."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy.stats import wilcoxon

from sthinge import _constants as K
from sthinge.tl._evaluate import _lattice, coexpression, compare, evaluate


def _adata(truth, pred, *, std=None, samples=None, sections=None, width=None):
    """AnnData with the truth in the normalised layer and a prediction in obsm, spots on a `width`-wide grid."""
    truth = np.asarray(truth, dtype=np.float32)
    n, G = truth.shape
    width = width or int(np.ceil(np.sqrt(n)))
    names = [f"s{i}" for i in range(n)]
    genes = [f"g{j}" for j in range(G)]
    obs = pd.DataFrame(
        {
            K.SECTION_KEY: sections if sections is not None else ["A"] * n,
            K.ARRAY_X: np.arange(n) % width,
            K.ARRAY_Y: np.arange(n) // width,
        },
        index=names,
    )
    a = ad.AnnData(X=truth.copy(), obs=obs, var=pd.DataFrame(index=genes))
    a.layers[K.NORM_LAYER] = truth
    a.uns[K.UNS_NORMALIZE] = {"key_added": K.NORM_LAYER, "transform": "log1p_cp10k"}
    a.obsm[K.PRED_KEY] = pd.DataFrame(np.asarray(pred, dtype=np.float32), index=names, columns=genes)
    if std is not None:
        a.obsm[K.PRED_KEY + K.STD_SUFFIX] = pd.DataFrame(np.asarray(std, np.float32), index=names, columns=genes)
    if samples is not None:
        a.obsm[K.PRED_KEY + K.SAMPLES_SUFFIX] = np.asarray(samples, dtype=np.float32)
    return a


def test_perfect_prediction():
    truth = np.random.default_rng(0).uniform(0, 5, size=(25, 4))
    res = evaluate(_adata(truth, truth), metrics=["pcc4", "mse", "mae", "ssim", "pcc"])
    row = res.loc["A"]
    assert row["pcc4"] == pytest.approx(1.0) and row["pcc"] == pytest.approx(1.0)
    assert row["mse"] == 0 and row["mae"] == 0
    assert row["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert row["pcc4_n_genes"] == 4 and row["n_spots"] == 25 and row["n_constant"] == 0
    assert res.attrs["truth_layer"] == K.NORM_LAYER and res.attrs["rank_by"] == "variance"
    # no std: no uncertainty columns
    assert "unc_spearman" not in res.columns


def test_shuffled_prediction_has_pcc_near_zero():
    rng = np.random.default_rng(1)
    truth = rng.normal(3, 1, size=(400, 20)).clip(0)
    pred = truth[rng.permutation(400)]
    res = evaluate(_adata(truth, pred), metrics=["pcc", "ssim"])
    assert abs(res.loc["A", "pcc"]) < 0.05
    assert res.loc["A", "ssim"] < 0.5


def test_known_pcc_mse_mae_by_hand():
    truth = np.array([[1, 1], [2, 2], [3, 3], [4, 4]], float)
    pred = np.array([[1, 7], [3, 5], [2, 3], [4, 1]], float)  # gene 1: -2 x + 9
    genes = evaluate(_adata(truth, pred), metrics=["pcc", "mse", "mae"], per_gene=True).set_index("gene")
    # gene 0: centred (-1.5, -.5, .5, 1.5) vs (-1.5, .5, -.5, 1.5): 4 / 5
    assert genes.loc["g0", "pcc"] == pytest.approx(0.8)
    assert genes.loc["g1", "pcc"] == pytest.approx(-1.0)
    assert genes.loc["g0", "mse"] == pytest.approx(0.5) and genes.loc["g0", "mae"] == pytest.approx(0.5)
    summary = evaluate(_adata(truth, pred), metrics=["mse", "mae"])
    err = pred - truth
    assert summary.loc["A", "mse"] == pytest.approx((err**2).mean())
    assert summary.loc["A", "mae"] == pytest.approx(np.abs(err).mean())


def test_pcc_k_with_fewer_genes_than_k(caplog):
    """PCC-k is named for k genes: with fewer (PCC-200 of a 116-gene panel) it is NaN, with a note; "pcc" is all."""
    rng = np.random.default_rng(2)
    truth = rng.uniform(0, 4, size=(30, 3))
    pred = truth + rng.normal(0, 0.5, size=truth.shape)
    with caplog.at_level("INFO", logger="sthinge"):
        res = evaluate(_adata(truth, pred), metrics=["pcc50", "pcc3", "pcc2", "pcc"])
    per = [np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(3)]
    assert np.isnan(res.loc["A", "pcc50"]) and res.loc["A", "pcc50_n_genes"] == 3  # how many there are
    assert res.loc["A", "pcc3"] == pytest.approx(np.mean(per)) and res.loc["A", "pcc3_n_genes"] == 3
    assert res.loc["A", "pcc2_n_genes"] == 2 and res.loc["A", "pcc"] == pytest.approx(np.mean(per))
    notes = [r.getMessage() for r in caplog.records if "is NaN" in r.getMessage()]
    assert len(notes) == 1 and "'pcc50'" in notes[0] and "'A' (3 genes)" in notes[0] and "pcc3" not in notes[0]
    # the default metrics include the mean over all genes
    default = evaluate(_adata(truth, pred))
    assert np.isnan(default.loc["A", "pcc200"]) and default.loc["A", "pcc"] == pytest.approx(np.mean(per))


def test_rank_by_variance_vs_pcc():
    rng = np.random.default_rng(3)
    base = rng.normal(size=(40, 4))
    truth = 5 + base * np.array([3.0, 2.0, 0.5, 0.2])  # variances: g0 > g1 > g2 > g3
    pred = truth.copy()
    pred[:, :2] += rng.normal(0, 2.0, size=(40, 2))  # the two most variable genes are predicted badly
    pcc = [np.corrcoef(truth[:, j], pred[:, j])[0, 1] for j in range(4)]
    var = evaluate(_adata(truth, pred), metrics=["pcc2"], rank_by="variance").loc["A", "pcc2"]
    top = evaluate(_adata(truth, pred), metrics=["pcc2"], rank_by="pcc").loc["A", "pcc2"]
    assert var == pytest.approx((pcc[0] + pcc[1]) / 2)  # chosen by the truth's variance: g0, g1
    assert top == pytest.approx(1.0)  # the two largest PCCs: g2, g3 (exact)
    assert top > var


def test_constant_genes_are_excluded_and_counted():
    rng = np.random.default_rng(4)
    truth = rng.uniform(1, 3, size=(25, 3))
    truth[:, 1] = 2.0
    pred = truth + rng.normal(0, 0.1, size=truth.shape)
    a = _adata(truth, pred)
    res = evaluate(a, metrics=["pcc2", "pcc3", "ssim"])
    assert res.loc["A", "n_constant"] == 1 and res.loc["A", "pcc2_n_genes"] == 2 and np.isfinite(res.loc["A", "pcc2"])
    assert np.isnan(res.loc["A", "pcc3"]) and res.loc["A", "pcc3_n_genes"] == 2  # the constant gene has no PCC
    genes = evaluate(a, metrics=["pcc50", "ssim"], per_gene=True).set_index("gene")
    assert np.isnan(genes.loc["g1", "pcc"]) and np.isnan(genes.loc["g1", "ssim"])
    assert np.isfinite(genes.loc["g0", "pcc"])


def test_coverage_from_samples_and_gaussian():
    n, S = 4, 101
    truth = np.array([[0.0], [10.0], [50.0], [96.0]])
    samples = np.broadcast_to(np.arange(S, dtype=float)[None, :, None], (n, S, 1))  # 5-95 % interval = [5, 95]
    mean = samples.mean(1)
    a = _adata(truth, mean, std=samples.std(1), samples=samples, width=2)
    res = evaluate(a, metrics=["mse"])
    assert res.loc["A", "coverage90"] == pytest.approx(0.5)
    assert res.loc["A", "coverage90_method"] == "samples"
    # Gaussian interval mean +- 1.645 std
    truth = np.array([[0.0], [1.0], [1.7], [-1.6]]) + 5
    std = np.ones((4, 1))
    a = _adata(truth, np.full((4, 1), 5.0), std=std, width=2)
    res = evaluate(a, metrics=["mse"])
    assert res.loc["A", "coverage90"] == pytest.approx(0.75)
    assert res.loc["A", "coverage90_method"] == "gaussian"


def test_uncertainty_spearman():
    rng = np.random.default_rng(5)
    truth = rng.uniform(1, 4, size=(30, 2))
    pred = truth + rng.normal(0, 0.5, size=truth.shape)
    good = _adata(truth, pred, std=np.abs(pred - truth))
    assert evaluate(good, metrics=["mse"]).loc["A", "unc_spearman"] == pytest.approx(1.0)
    bad = _adata(truth, pred, std=-np.abs(pred - truth) + 10)
    assert evaluate(bad, metrics=["mse"]).loc["A", "unc_spearman"] == pytest.approx(-1.0)


def test_per_section_and_unpredicted_rows():
    rng = np.random.default_rng(6)
    truth = rng.uniform(0, 3, size=(32, 3))
    pred = truth.copy()
    pred[16:] = truth[16:][::-1]
    pred[:4] = np.nan  # not predicted
    a = _adata(truth, pred, sections=["A"] * 16 + ["B"] * 16, width=4)
    res = evaluate(a, metrics=["pcc", "mse"])
    assert list(res.index) == ["A", "B"] and res.index.name == K.SECTION_KEY
    assert res.loc["A", "n_spots"] == 12 and res.loc["A", "mse"] == 0
    assert res.loc["B", "mse"] > 0
    pooled = evaluate(a, metrics=["mse"], by=None)
    assert list(pooled.index) == ["all"] and pooled.loc["all", "n_spots"] == 28
    genes = evaluate(a, metrics=["pcc"], per_gene=True)
    assert set(genes.columns) >= {"section", "gene", "pcc", "mse", "mae"} and len(genes) == 6


def test_spatialdata_prediction_aligned_by_obs_names():
    import sthinge as st
    from sthinge.pp._normalize import normalize
    from sthinge.tl._data import _expression
    from sthinge.tl._predict import _write_prediction

    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=8, image=False)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    genes = list(table.var_names[:5])
    rows = np.flatnonzero(table.obs[K.SECTION_KEY] == "S2")[::-1]  # reversed order
    truth, _ = _expression(table, None, genes, rows)
    _write_prediction(
        sdata, table, rows, truth, np.full_like(truth, np.nan), genes, "pred", {"source_table": K.TABLE_KEY}, False
    )
    res = evaluate(sdata, pred_key="pred", metrics=["pcc5", "mse", "ssim"])
    assert list(res.index) == ["S2"]
    assert res.loc["S2", "pcc5"] == pytest.approx(1.0) and res.loc["S2", "mse"] == 0
    assert res.loc["S2", "ssim"] == pytest.approx(1.0, abs=1e-6)
    sub = evaluate(sdata, pred_key="pred", genes=genes[:2], metrics=["pcc50"])
    assert sub.loc["S2", "pcc50_n_genes"] == 2
    with pytest.raises(KeyError, match="pred_key"):
        evaluate(sdata, pred_key="nope")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"metrics": ["pcc50", "r2"]}, ValueError, "metrics"),
        ({"rank_by": "mean"}, ValueError, "rank_by"),
        ({"pred_key": "missing"}, KeyError, "pred_key"),
        ({"genes": ["g0", "NOPE"]}, KeyError, "genes"),
        ({"truth_layer": "counts"}, KeyError, "truth_layer"),
        ({"by": "nope"}, KeyError, "by"),
    ],
)
def test_evaluate_errors(kwargs, err, match):
    truth = np.random.default_rng(0).uniform(0, 2, size=(9, 2))
    with pytest.raises(err, match=match):
        evaluate(_adata(truth, truth), **kwargs)


def test_lattice_square_and_hexagonal():
    # Visium-like: every other column in alternating rows
    y = np.repeat(np.arange(4), 3)
    x = np.tile(np.arange(3) * 2, 4) + y % 2
    iy, ix = _lattice(pd.DataFrame({K.ARRAY_X: x, K.ARRAY_Y: y}), None)
    assert len(set(zip(iy, ix))) == 12 and ix.max() == 2 and iy.max() == 3
    # no array coordinates: a square grid inferred from pixel positions
    xy = np.c_[np.tile(np.arange(5), 5) * 46.3 + 10, np.repeat(np.arange(5), 5) * 46.3 + 7]
    iy, ix = _lattice(pd.DataFrame(index=range(25)), xy)
    np.testing.assert_array_equal(ix, np.tile(np.arange(5), 5))
    np.testing.assert_array_equal(iy, np.repeat(np.arange(5), 5))


def test_coexpression():
    rng = np.random.default_rng(7)
    truth = rng.uniform(0, 3, size=(30, 4))
    co = coexpression(_adata(truth, truth))
    assert co.similarity == pytest.approx(1.0) and co.rmse == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(co.truth.to_numpy(), np.corrcoef(truth, rowvar=False), atol=1e-6)
    pred = truth.copy()
    pred[:, 0] = pred[:, 1]  # a fake perfect correlation between g0 and g1
    co = coexpression(_adata(truth, pred), method="spearman")
    assert co.pred.loc["g0", "g1"] == pytest.approx(1.0) and co.similarity < 1.0
    with pytest.raises(ValueError, match="method"):
        coexpression(_adata(truth, truth), method="kendall")
    with pytest.raises(ValueError, match="section"):
        coexpression(_adata(truth, truth), section="Z")


def test_compare_known_wilcoxon():
    a = pd.DataFrame({"pcc50": [0.5, 0.6, 0.7, 0.8, 0.9, 0.55]}, index=list("ABCDEF"))
    d = np.array([0.1, 0.2, -0.05, 0.3, 0.15, 0.25])
    b = pd.DataFrame({"pcc50": (a["pcc50"] - d).to_numpy()[::-1]}, index=list("FEDCBA"))  # matched by index
    res = compare(a, b, metric="pcc50")
    # ranks of |d|: 2, 4, 1, 6, 3, 5 -> W- = 1; exact two-sided p = 2 * 2 / 2**6
    assert res["n"] == 6 and res["statistic"] == pytest.approx(1.0)
    assert res["pvalue"] == pytest.approx(0.0625)
    assert res["pvalue"] == pytest.approx(wilcoxon(a["pcc50"], b.loc[a.index, "pcc50"]).pvalue)
    assert res["median_diff"] == pytest.approx(np.median(d))
    assert compare(a, b, metric="pcc50", alternative="greater")["pvalue"] == pytest.approx(2 / 64)
    with pytest.raises(ValueError, match="share no rows"):
        compare(a, b.set_axis(list("UVWXYZ")), metric="pcc50")
    with pytest.raises(KeyError, match="metric"):
        compare(a, b, metric="mse")


def test_compare_per_gene_tables():
    rng = np.random.default_rng(8)
    truth = rng.uniform(0, 3, size=(25, 6))
    good = evaluate(_adata(truth, truth + rng.normal(0, 0.1, truth.shape)), per_gene=True, metrics=["pcc"])
    bad = evaluate(_adata(truth, truth + rng.normal(0, 2.0, truth.shape)), per_gene=True, metrics=["pcc"])
    res = compare(good, bad.iloc[::-1], metric="pcc", alternative="greater")
    assert res["n"] == 6 and res["median_diff"] > 0
    assert res["pvalue"] == pytest.approx(1 / 64)


# ----------------------------------------------------------------------------------------------------------
# calibration: intervals at several levels, widths, CRPS
# ----------------------------------------------------------------------------------------------------------
LEVELS = (0.5, 0.8, 0.9, 0.95)


def test_gaussian_intervals_cover_their_nominal_level():
    """Truth drawn from the predicted Gaussian: each central interval covers its level (wrong z-scores fail)."""
    from scipy.stats import norm

    rng = np.random.default_rng(10)
    n, G = 4000, 5
    mean = rng.uniform(1, 4, size=(n, G))
    std = rng.uniform(0.2, 1.5, size=(n, G))
    truth = mean + std * rng.normal(size=(n, G))
    res = evaluate(_adata(truth, mean, std=std), metrics=["mse"])
    row = res.loc["A"]
    for level in LEVELS:
        label = f"{100 * level:g}"
        assert abs(row[f"coverage{label}"] - level) < 0.03, (level, row[f"coverage{label}"])
        z = norm.ppf(0.5 + level / 2)
        assert row[f"width{label}"] == pytest.approx(2 * z * std.mean(), rel=1e-5)
    assert row["interval_method"] == "gaussian" and row["coverage90_method"] == "gaussian"
    assert row["crps_method"] == "gaussian" and np.isfinite(row["crps"])
    genes = evaluate(_adata(truth, mean, std=std), metrics=["mse"], per_gene=True)
    assert {"coverage50", "coverage95", "width80", "crps", "unc_spearman"} <= set(genes.columns)
    assert genes["coverage90"].between(0.87, 0.93).all()


def test_crps_from_samples_matches_the_gaussian_closed_form():
    from sthinge.tl._intervals import crps_gaussian, crps_samples

    rng = np.random.default_rng(11)
    n, S, G = 300, 1000, 2
    mean = rng.uniform(1, 4, size=(n, G))
    std = rng.uniform(0.3, 1.0, size=(n, G))
    truth = mean + std * rng.normal(size=(n, G))
    samples = mean[:, None, :] + std[:, None, :] * rng.normal(size=(n, S, G))
    closed = crps_gaussian(mean, std, truth)
    from_samples = crps_samples(samples, truth, axis=1)
    assert from_samples.mean() == pytest.approx(closed.mean(), rel=0.02)
    # the energy form by brute force on a few samples: E|X - y| - 1/2 E|X - X'| over pairs i != j
    x, y = rng.normal(size=7), 0.3
    brute = np.abs(x - y).mean() - 0.5 * np.abs(x[:, None] - x[None, :]).sum() / (7 * 6)
    assert crps_samples(x[None, :], np.array([y]))[0] == pytest.approx(brute)
    # evaluate uses the samples when there are samples, else the closed form
    with_samples = evaluate(_adata(truth, mean, std=std, samples=samples), metrics=["mse"])
    gaussian = evaluate(_adata(truth, mean, std=std), metrics=["mse"])
    assert with_samples.loc["A", "crps_method"] == "samples" and gaussian.loc["A", "crps_method"] == "gaussian"
    assert with_samples.loc["A", "crps"] == pytest.approx(gaussian.loc["A", "crps"], rel=0.02)
    assert gaussian.loc["A", "crps"] == pytest.approx(closed.mean())
    # a proper score: the truth's own distribution beats an overconfident one
    sharp = evaluate(_adata(truth, mean, std=std / 4), metrics=["mse"])
    assert sharp.loc["A", "crps"] > gaussian.loc["A", "crps"]


def test_crps_of_a_point_prediction_is_the_absolute_error():
    from sthinge.tl._intervals import crps_gaussian, crps_samples

    rng = np.random.default_rng(12)
    truth = rng.uniform(0, 3, size=(20, 3))
    mean = truth + rng.normal(size=(20, 3))
    samples = np.repeat(mean[:, None, :], 5, axis=1)  # zero spread
    np.testing.assert_allclose(crps_samples(samples, truth, axis=1), np.abs(mean - truth))
    np.testing.assert_allclose(crps_samples(samples[:, :1], truth, axis=1), np.abs(mean - truth))  # one sample
    np.testing.assert_allclose(crps_gaussian(mean, np.zeros_like(mean), truth), np.abs(mean - truth))
    res = evaluate(_adata(truth, mean, std=np.zeros_like(mean), samples=samples, width=5), metrics=["mae"])
    assert res.loc["A", "crps"] == pytest.approx(res.loc["A", "mae"])
    assert res.loc["A", "width90"] == 0


def test_interval_layer_names_round_trip():
    from sthinge.tl._intervals import (
        interval_layer_names,
        interval_quantiles,
        level_label,
        quantile_from_name,
        quantile_name,
    )

    expected = {0.5: ("q25", "q75"), 0.8: ("q10", "q90"), 0.9: ("q05", "q95"), 0.95: ("q025", "q975")}
    for level, (lo, hi) in expected.items():
        assert interval_layer_names("sthinge", level) == (f"sthinge_{lo}", f"sthinge_{hi}")
        names = interval_layer_names("my_pred", level)
        q_lo, q_hi = (quantile_from_name(name) for name in names)
        assert (q_lo, q_hi) == interval_quantiles(level)
        assert q_hi - q_lo == pytest.approx(level) and q_lo + q_hi == pytest.approx(1.0)
    for q in (0.001, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975, 0.999, 0.1 + 0.2):
        assert quantile_from_name(quantile_name(q)) == pytest.approx(q, abs=1e-12)
    assert quantile_name(0.1 + 0.2) == "q30" and quantile_name(0.9) == "q90"
    assert [level_label(lv) for lv in (0.5, 0.9, 0.975)] == ["50", "90", "97.5"]
    with pytest.raises(ValueError, match="quantile name"):
        quantile_from_name("sthinge_std")


def test_intervals_from_quantile_layers_then_samples_then_gaussian():
    n, S = 4, 101
    truth = np.array([[0.0], [10.0], [50.0], [96.0]])
    samples = np.broadcast_to(np.arange(S, dtype=float)[None, :, None], (n, S, 1)).copy()
    mean = samples.mean(1)
    a = _adata(truth, mean, std=samples.std(1), samples=samples, width=2)
    res = evaluate(a, metrics=["mse"])
    assert res.loc["A", "interval_method"] == "samples"
    assert res.loc["A", "coverage50"] == pytest.approx(0.25)  # [25, 75] holds 50 only
    assert res.loc["A", "width50"] == pytest.approx(50.0) and res.loc["A", "width90"] == pytest.approx(90.0)
    # quantile layers written with the prediction take precedence for their level
    names = list(a.obsm[K.PRED_KEY].columns)
    lo = pd.DataFrame(np.full((n, 1), -1.0), index=a.obs_names, columns=names)
    a.obsm[K.PRED_KEY + "_q05"], a.obsm[K.PRED_KEY + "_q95"] = lo, lo + 100.0  # [-1, 99]: all four inside
    res = evaluate(a, metrics=["mse"])
    assert res.loc["A", "coverage90"] == 1.0 and res.loc["A", "width90"] == pytest.approx(100.0)
    assert res.loc["A", "coverage90_method"] == "layers"
    assert res.loc["A", "interval_method"] == "samples(50,80,95)+layers(90)"
    # without samples, the other levels are Gaussian
    del a.obsm[K.PRED_KEY + K.SAMPLES_SUFFIX]
    res = evaluate(a, metrics=["mse"], levels=[0.9, 0.5])
    assert res.loc["A", "interval_method"] == "layers(90)+gaussian(50)"
    assert "coverage80" not in res and list(res.attrs["levels"]) == [0.9, 0.5]


def test_quantile_layers_of_a_prediction_table():
    """SpatialData: quantile layers of the prediction table (what tl.predict writes) give the intervals."""
    import sthinge as st
    from sthinge.pp._normalize import normalize
    from sthinge.tl._baselines import fit_baseline, predict_baseline
    from sthinge.tl._intervals import interval_layer_names

    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=4, image=False, seed=0)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    table.obsm["X_f"] = np.asarray(table.obsm["synthetic_factors"], dtype=np.float32)
    table.uns[K.GENES_KEY] = list(table.var_names)
    model = fit_baseline(sdata, embedding_key="X_f", train_sections=["S1"])
    model.calibration = None  # Gaussian intervals wherever no layer is stored
    predict_baseline(sdata, model, sections=["S2"], key_added="pred", levels=None)
    pred = sdata.tables["pred"]
    lo, hi = interval_layer_names("pred", 0.95)
    pred.layers[lo], pred.layers[hi] = np.asarray(pred.X) - 1e3, np.asarray(pred.X) + 1e3
    res = evaluate(sdata, pred_key="pred", metrics=["mse"])
    assert res.loc["S2", "coverage95"] == 1.0 and res.loc["S2", "width95"] == pytest.approx(2e3)
    assert res.loc["S2", "interval_method"] == "gaussian(50,80,90)+layers(95)"


@pytest.mark.parametrize(
    ("levels", "err"),
    [
        ([1.5], ValueError),
        ([0.0], ValueError),
        ([0.9, 1.0], ValueError),
        ([90], ValueError),
        ([], ValueError),
        (["0.9"], ValueError),
        ("0.9", TypeError),
        ([float("nan")], ValueError),
    ],
)
def test_bad_levels_name_the_argument(levels, err):
    a = _adata(np.ones((4, 1)), np.ones((4, 1)), std=np.ones((4, 1)), width=2)
    with pytest.raises(err, match="`levels`"):
        evaluate(a, levels=levels)
