"""Calibrated prediction intervals end to end: fit -> calibrate -> predict -> evaluate, save/load, bad levels."""

import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K

EMB = "X_factors"
FIT_KW = dict(
    backbone="tiny",
    embedding_key=EMB,
    batch_size=32,
    lr=1e-3,
    min_epochs=0,
    curriculum_epochs=1,
    val_metric="loss",
    max_epochs=2,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def setup(quiet):
    """Four exchangeable synthetic sections: train on S2, calibrate on S3 and S4, test on S1."""
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=4, n_spots=100, n_genes=16, seed=1)
    normalize(sdata)
    select_genes(sdata, n_top=16, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    table.obsm[EMB] = np.asarray(table.obsm["synthetic_factors"], dtype=np.float32)
    model = st.tl.fit(sdata, train_sections=["S2", "S3", "S4"], calibration_sections=["S3", "S4"], **FIT_KW)
    return sdata, model


def test_fit_holds_out_the_calibration_sections(setup):
    _, model = setup
    assert model.train_sections == ["S2"]
    cal = model.calibration
    assert cal is not None and cal.n == 200 and cal.info["source"] == "calibration_sections"
    assert cal.info["sections"] == ["S3", "S4"] and cal.scale.shape[1] == model.n_genes


def test_calibrated_intervals_cover_their_level_on_a_new_section(setup):
    sdata, model = setup
    st.tl.predict(sdata, model, sections=["S1"], n_samples=4, levels=(0.5, 0.9), key_added="cal")
    res = st.tl.evaluate(sdata, pred_key="cal", metrics=["mse"])
    assert res.loc["S1", "interval_method"] == "layers(50,90)+conformal(80,95)"
    # 100 spots x 16 genes of an exchangeable section: close to the nominal levels
    assert abs(res.loc["S1", "coverage50"] - 0.5) < 0.12 and abs(res.loc["S1", "coverage90"] - 0.9) < 0.07
    # the same model without its calibration: Gaussian intervals, far from the level (the test can fail)
    saved, model.calibration = model.calibration, None
    try:
        st.tl.predict(sdata, model, sections=["S1"], n_samples=4, levels=(0.9,), key_added="raw")
    finally:
        model.calibration = saved
    raw = st.tl.evaluate(sdata, pred_key="raw", metrics=["mse"], levels=(0.9,))
    assert raw.loc["S1", "interval_method"] == "layers" and raw.loc["S1", "coverage90"] < 0.75


def test_calibrate_replaces_the_calibration_and_warns_on_training_sections(setup, caplog):
    sdata, model = setup
    saved = model.calibration
    try:
        cal = st.tl.calibrate(sdata, model, sections=["S2"], n_samples=2)
        assert model.calibration is cal and cal.n == 100 and cal.info["sections"] == ["S2"]
        assert "used to train the model" in caplog.text
    finally:
        model.calibration = saved


def test_predict_warns_when_sampling_differs_from_the_calibration(setup, caplog):
    sdata, model = setup
    T = model.config.n_steps
    assert model.calibration.info["n_samples"] == 4 and model.calibration.info["n_steps"] == T
    caplog.clear()
    st.tl.predict(sdata, model, sections=["S1"], n_samples=4, inplace=False)
    assert "calibrated for other sampling settings" not in caplog.text
    st.tl.predict(sdata, model, sections=["S1"], n_samples=1, n_steps=3, inplace=False)
    assert f"n_samples=1 (calibrated with 4), n_steps=3 (calibrated with {T})" in caplog.text
    caplog.clear()  # no intervals asked for: the calibration does not apply, nothing to warn about
    st.tl.predict(sdata, model, sections=["S1"], n_samples=1, n_steps=3, levels=None, inplace=False)
    assert "calibrated for other sampling settings" not in caplog.text


def test_fit_calibrates_with_the_given_steps(setup):
    sdata, _ = setup
    kw = {**FIT_KW, "max_epochs": 1, "train_sections": ["S2", "S3"], "calibration_sections": ["S3"]}
    with pytest.raises(ValueError, match=r"`calibration_steps` must be <= "):
        st.tl.fit(sdata, calibration_steps=10_000, **kw)
    model = st.tl.fit(sdata, calibration_steps=3, calibration_samples=2, **kw)
    assert model.calibration.info["n_steps"] == 3 and model.calibration.info["n_samples"] == 2


def test_save_load_keeps_the_calibration(setup, tmp_path):
    sdata, model = setup
    model.save(tmp_path / "m")
    again = st.tl.HingeModel.load(tmp_path / "m")
    np.testing.assert_array_equal(again.calibration.scale, np.asarray(model.calibration.scale, np.float32))
    np.testing.assert_array_equal(again.calibration.delta, np.asarray(model.calibration.delta, np.float32))
    a = st.tl.predict(sdata, model, sections=["S1"], n_samples=2, inplace=False)
    b = st.tl.predict(sdata, again, sections=["S1"], n_samples=2, inplace=False)
    for name in ("sthinge_q05", "sthinge_q95", "sthinge_q25", "sthinge_q75"):
        np.testing.assert_allclose(a.layers[name], b.layers[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("levels", "err", "match"),
    [
        ((1.5,), ValueError, "strictly between 0 and 1"),
        ((0.0,), ValueError, "strictly between 0 and 1"),
        ((), ValueError, "`levels` is empty"),
        ((0.9, 0.5), ValueError, "ascending"),
        ("0.9", TypeError, "`levels`"),
        ((0.5, float("nan")), ValueError, "`levels`"),
    ],
)
def test_bad_levels_are_refused_before_any_work(setup, levels, err, match):
    sdata, model = setup
    before = set(sdata.tables)
    with pytest.raises(err, match=match):
        st.tl.predict(sdata, model, sections=["S1"], levels=levels, key_added="bad")
    assert set(sdata.tables) == before


def test_anndata_prediction_keeps_its_samples(setup):
    sdata, model = setup
    table = sdata.tables[K.TABLE_KEY].copy()
    st.tl.predict(table, model, sections=["S1"], n_samples=3, return_samples=True, levels=(0.9,))
    samples = table.obsm["sthinge_samples"]
    rows = (table.obs["section"] == "S1").to_numpy()
    assert samples.shape == (table.n_obs, 3, model.n_genes)
    assert np.isfinite(samples[rows]).all() and np.isnan(samples[~rows]).all()
    assert (samples[rows] >= 0).all() and samples[rows].std(1).mean() > 0  # draws of the Gaussian decoder
    res = st.tl.evaluate(table, metrics=["mse"])
    assert res.loc["S1", "crps_method"] == "samples"
    st.tl.predict(table, model, sections=["S1"], n_samples=2, overwrite=True)  # no samples: none left behind
    assert "sthinge_samples" not in table.obsm
