"""pl.calibration (reliability diagram) and the interval-width panel of pl.spatial."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import sthinge as st
from sthinge import _constants as K
from sthinge import pl

PNG = b"\x89PNG\r\n\x1a\n"
LEVELS = (0.5, 0.8, 0.9, 0.95)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _evaluated(method: str, shrink: float = 1.0) -> pd.DataFrame:
    """A per-section table as `tl.evaluate` writes it; `shrink` < 1 makes the coverages overconfident."""
    idx = pd.Index(["S1", "S2"], name="section")
    cols = {f"coverage{100 * lv:g}": [lv * shrink, lv * shrink + 0.02] for lv in LEVELS}
    frame = pd.DataFrame(
        {"method": method, "n_spots": [10, 30], "n_genes": 5, **cols, "interval_method": "gaussian"}, index=idx
    )
    frame.attrs["pred_key"] = method
    return frame


def _lines(fig):
    return fig.axes[0].get_lines()


def test_calibration_one_line_per_method_and_the_diagonal(tmp_path):
    hinge, ridge = _evaluated("hinge"), _evaluated("ridge", shrink=0.8)
    out = tmp_path / "cal.png"
    fig = pl.calibration(hinge, ridge, return_fig=True, save=out)
    assert isinstance(fig, Figure) and out.read_bytes()[:8] == PNG
    lines = _lines(fig)
    assert len(lines) == 3  # the diagonal and one line per method
    assert lines[0].get_linestyle() == "--" and list(lines[0].get_xdata()) == [0, 1]
    assert [line.get_label() for line in lines[1:]] == ["hinge (gaussian)", "ridge (gaussian)"]
    ax = fig.axes[0]
    assert ax.get_xlabel() == "nominal coverage" and ax.get_ylabel() == "empirical coverage"
    np.testing.assert_allclose(lines[1].get_xdata(), LEVELS)
    # sections pooled by their number of spot-gene values: (10 * lv + 30 * (lv + 0.02)) / 40
    np.testing.assert_allclose(lines[1].get_ydata(), [lv + 0.015 for lv in LEVELS])
    assert pl.calibration(hinge) is None


def test_calibration_dict_concat_labels_and_levels():
    hinge, ridge = _evaluated("hinge"), _evaluated("ridge", shrink=0.8)
    fig = pl.calibration({"HINGE": hinge, "Ridge": ridge}, return_fig=True)
    assert [line.get_label() for line in _lines(fig)[1:]] == ["HINGE (gaussian)", "Ridge (gaussian)"]
    # a concatenation of results (e.g. cross-validations) is split by its "method" column
    fig = pl.calibration(pd.concat([hinge, ridge]), levels=[0.9, 0.5], return_fig=True)
    lines = _lines(fig)
    assert len(lines) == 3 and list(lines[1].get_xdata()) == [0.5, 0.9]
    fig, ax = plt.subplots()
    assert pl.calibration(hinge, labels=["mine"], ax=ax, return_fig=True) is fig
    assert ax.get_lines()[1].get_label() == "mine (gaussian)"


def _gaussian_ridge():
    """Two synthetic sections and a ridge baseline fitted on S1, without its conformal step (Gaussian intervals)."""
    from sthinge.pp._normalize import normalize
    from sthinge.tl._baselines import fit_baseline

    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=4, image=False, seed=0)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    table.obsm["X_f"] = np.asarray(table.obsm["synthetic_factors"], dtype=np.float32)
    table.uns[K.GENES_KEY] = list(table.var_names)
    model = fit_baseline(sdata, embedding_key="X_f", train_sections=["S1"])
    model.calibration = None
    return sdata, model


def test_calibration_from_evaluate_of_a_baseline():
    """End to end: a ridge baseline's Gaussian std gives coverages at every default level."""
    from sthinge.tl._baselines import predict_baseline

    sdata, model = _gaussian_ridge()  # Gaussian intervals
    predict_baseline(sdata, model, sections=["S2"], levels=None)
    res = st.tl.evaluate(sdata, pred_key="ridge", metrics=["mse"])
    fig = pl.calibration(res, return_fig=True)
    line = _lines(fig)[1]
    assert line.get_label() == "ridge (gaussian)" and len(line.get_xdata()) == 4


@pytest.mark.parametrize(
    ("call", "err", "match"),
    [
        (lambda h: pl.calibration(h, levels=[0.7]), ValueError, "levels"),  # no coverage70 column
        (lambda h: pl.calibration(h, levels=[1.5]), ValueError, "levels"),
        (lambda h: pl.calibration(h, levels=[0.0, 0.9]), ValueError, "levels"),
        (lambda h: pl.calibration(h.drop(columns=[c for c in h if c.startswith("coverage")])), ValueError, "coverage"),
        (lambda h: pl.calibration(h, labels=["a", "b"]), ValueError, "labels"),
        (lambda h: pl.calibration({"a": h}, labels=["a"]), ValueError, "labels"),
        (lambda h: pl.calibration(h, h), ValueError, "more than once"),
        (lambda h: pl.calibration(st.tl.compare(h, h, metric="coverage90")), TypeError, "compare"),
        (lambda h: pl.calibration(), ValueError, "results"),
        (lambda h: pl.calibration({}), ValueError, "results"),
    ],
)
def test_calibration_errors(call, err, match):
    with pytest.raises(err, match=match):
        call(_evaluated("hinge"))


def test_calibration_save_and_overwrite(tmp_path):
    out = tmp_path / "cal.png"
    assert pl.calibration(_evaluated("hinge"), save=out, dpi=40) is None
    with pytest.raises(FileExistsError, match="overwrite"):
        pl.calibration(_evaluated("hinge"), save=out)
    assert isinstance(pl.calibration(_evaluated("hinge"), save=out, overwrite=True, return_fig=True), Figure)


def test_spatial_interval_width_panel():
    from sthinge.tl._baselines import predict_baseline
    from sthinge.tl._intervals import gaussian_z

    sdata, model = _gaussian_ridge()  # Gaussian intervals: width 2 z std
    predict_baseline(sdata, model, sections=["S2"], levels=None)
    gene = sdata.tables[K.TABLE_KEY].var_names[0]
    fig = pl.spatial(sdata, gene, keys=["ridge", "ridge_width90"], pred_key="ridge", img=False, return_fig=True)
    axes = [a for a in fig.axes if a.get_title()]
    assert axes[1].get_title() == f"{gene}: 90 % interval width"
    widths = np.asarray(axes[1].collections[0].get_array())
    np.testing.assert_allclose(widths, 2 * gaussian_z(0.9) * model.resid_std[0], rtol=1e-5)
    with pytest.raises(KeyError, match="keys"):
        pl.spatial(sdata, gene, keys=["ridge_width150"], pred_key="ridge")
    with pytest.raises(KeyError, match="keys"):
        pl.spatial(sdata, gene, keys=["nope_width90"], pred_key="ridge")
