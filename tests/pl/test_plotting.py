"""Plotting: every function returns a Figure, saves a PNG and names the bad argument."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

import sthinge as st
from sthinge import _constants as K
from sthinge import pl

EMB = "X_test"
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def predicted(quiet):
    """Two small sections with images; a "sthinge" prediction (with std) of S2 from a ridge baseline."""
    from sthinge.pp._normalize import normalize
    from sthinge.tl._baselines import fit_baseline, predict_baseline

    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=6, seed=0)
    normalize(sdata)
    table = sdata.tables[K.TABLE_KEY]
    table.obsm[EMB] = np.asarray(table.obsm["synthetic_factors"], dtype=np.float32)
    table.uns[K.GENES_KEY] = list(table.var_names)
    model = fit_baseline(sdata, method="ridge", embedding_key=EMB, train_sections=["S1"])
    predict_baseline(sdata, model, sections=["S2"], key_added=K.PRED_KEY)
    pred = sdata.tables[K.PRED_KEY]
    pred.layers[K.PRED_KEY + K.STD_SUFFIX] = np.random.default_rng(0).uniform(0.1, 1, pred.shape).astype(np.float32)
    return sdata


def test_spatial_figure_image_and_save(predicted, tmp_path):
    sdata = predicted
    gene = sdata.tables[K.PRED_KEY].var_names[0]
    out = tmp_path / "spatial.png"
    fig = pl.spatial(sdata, gene, return_fig=True, save=out)
    assert isinstance(fig, Figure)
    axes = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in axes] == [f"{gene}: measured", f"{gene}: predicted mean", f"{gene}: predicted SD"]
    assert fig.get_suptitle() == "Section S2"  # the section drawn
    # the H&E is drawn in full-resolution pixel coordinates, whatever level is shown
    image = sdata.images["S2_image"]
    H, W = image.sizes["y"], image.sizes["x"]
    assert axes[0].images[0].get_extent() == [0.0, W, H, 0.0]
    assert out.read_bytes()[:8] == PNG
    # truth and prediction share the colour scale
    assert axes[0].collections[0].norm.vmax == axes[1].collections[0].norm.vmax
    assert pl.spatial(sdata, gene) is None


def test_spatial_truth_only_other_section_and_no_image(predicted):
    sdata = predicted
    gene = sdata.tables[K.TABLE_KEY].var_names[1]
    fig = pl.spatial(sdata, [gene], keys=["truth"], section="S1", img=False, return_fig=True)
    ax = [a for a in fig.axes if a.get_title()][0]
    assert not ax.images and len(ax.collections[0].get_array()) == 16
    # AnnData input without images
    adata = sdata.tables[K.TABLE_KEY].copy()
    fig = pl.spatial(adata, gene, keys=["truth"], return_fig=True)
    assert isinstance(fig, Figure)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"genes": "NOT_A_GENE"}, KeyError, "genes"),
        ({"keys": ["truth", "bogus"]}, KeyError, "keys"),
        ({"section": "S9"}, ValueError, "section"),
        ({"section": "S1"}, ValueError, "section"),  # S1 was not predicted
        ({"size": 0}, ValueError, "size"),
    ],
)
def test_spatial_errors(predicted, kwargs, err, match):
    kwargs = {"genes": predicted.tables[K.PRED_KEY].var_names[0], **kwargs}
    with pytest.raises(err, match=match):
        pl.spatial(predicted, **kwargs)


def test_coexpression_plot(predicted, tmp_path):
    out = tmp_path / "co.png"
    fig = pl.coexpression(predicted, return_fig=True, save=out)
    assert isinstance(fig, Figure) and "similarity" in fig._suptitle.get_text()
    assert out.read_bytes()[:8] == PNG
    with pytest.raises(KeyError, match="genes"):
        pl.coexpression(predicted, genes=["NOPE", "ALSO_NOPE"])
    with pytest.raises(KeyError, match="pred_key"):
        pl.coexpression(predicted, pred_key="missing")


def _results():
    idx = pd.Index(["S1", "S2", "S3"], name="section")
    a = pd.DataFrame({"method": "hinge", "pcc50": [0.6, 0.7, 0.65], "mse": [0.9, 0.8, 1.0]}, index=idx)
    b = pd.DataFrame({"method": "ridge", "pcc50": [0.5, 0.55, 0.6], "mse": [1.0, 1.1, 0.9]}, index=idx)
    return pd.concat([a, b])


@pytest.mark.parametrize("kind", ["box", "strip"])
def test_metrics_plot(kind, tmp_path):
    out = tmp_path / "m.png"
    fig = pl.metrics(_results(), metric="pcc50", kind=kind, return_fig=True, save=out)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["hinge", "ridge"]
    points = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert sum(len(c.get_offsets()) for c in points) == 6  # one point per section and method
    assert out.read_bytes()[:8] == PNG


def test_metrics_plot_errors():
    with pytest.raises(KeyError, match="metric"):
        pl.metrics(_results(), metric="pcc200")
    with pytest.raises(KeyError, match="by"):
        pl.metrics(_results(), by="model")
    with pytest.raises(ValueError, match="kind"):
        pl.metrics(_results(), kind="violin")


def test_history_plot(tmp_path):
    hist = [{"epoch": float(i), "train_loss": 1 / (i + 1), "val": 1.2 / (i + 1), "lr": 1e-4} for i in range(5)]
    out = tmp_path / "h.png"
    fig = pl.history(hist, return_fig=True, save=out)
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["training loss", "validation MSE"] and out.read_bytes()[:8] == PNG

    class Model:
        history = hist

    fig, ax = plt.subplots()
    assert pl.history(Model(), ax=ax, show_lr=False, return_fig=True) is fig
    with pytest.raises(KeyError, match="keys"):
        pl.history(hist, keys=["val_mse"])
    with pytest.raises(ValueError, match="empty"):
        pl.history([])


def test_spatial_multiscale_image_uses_a_lower_level(monkeypatch):
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    import sthinge.pl._spatial as spatial_module
    from sthinge.pp._normalize import normalize

    sdata = st.datasets.synthetic(n_sections=1, n_spots=9, n_genes=4, seed=1)
    normalize(sdata)
    full = np.asarray(sdata.images["S1_image"].values)
    sdata.images["S1_image"] = Image2DModel.parse(
        full, dims=("c", "y", "x"), scale_factors=[2, 2], transformations={"S1": Identity()}
    )
    monkeypatch.setattr(spatial_module, "_MAX_SIDE", full.shape[1] // 2 - 1)
    fig = pl.spatial(sdata, sdata.tables[K.TABLE_KEY].var_names[0], keys=["truth"], return_fig=True)
    shown = [a for a in fig.axes if a.get_title()][0].images[0]
    assert shown.get_array().shape[0] == full.shape[1] // 2  # the middle level of 3
    assert shown.get_extent() == [0.0, full.shape[2], full.shape[1], 0.0]  # still full-resolution pixels


@pytest.mark.parametrize("name", ["spatial", "coexpression", "metrics", "history"])
def test_shared_save_arguments(predicted, name, tmp_path):
    """The arguments every plotting function documents in its shared block (save, return_fig, dpi, overwrite) do
    what the block says, in each of them."""
    from matplotlib.image import imread

    hist = [{"epoch": float(i), "train_loss": 1 / (i + 1), "val": 1.2 / (i + 1)} for i in range(3)]
    data = {
        "spatial": (predicted, predicted.tables[K.PRED_KEY].var_names[0]),
        "coexpression": (predicted,),
        "metrics": (_results(),),
        "history": (hist,),
    }[name]
    plot = getattr(pl, name)
    out = tmp_path / "fig.png"
    assert plot(*data, save=out, dpi=40) is None  # return_fig=False (the default): nothing returned, file written
    assert out.read_bytes()[:8] == PNG
    small = imread(out).shape
    with pytest.raises(FileExistsError, match="overwrite"):  # an existing file needs overwrite=True
        plot(*data, save=out, dpi=80)
    assert imread(out).shape == small
    fig = plot(*data, save=out, dpi=80, overwrite=True, return_fig=True)
    assert isinstance(fig, Figure)
    big = imread(out).shape
    assert big[0] > 1.5 * small[0] and big[1] > 1.5 * small[1]  # dpi: twice the resolution (tight bbox: not exact)


def _plot_args(name, predicted):
    """Arguments that draw a figure with each plotting function."""
    hist = [{"epoch": float(i), "train_loss": 1 / (i + 1), "val": 1.2 / (i + 1)} for i in range(3)]
    coverages = pd.DataFrame({"method": "hinge", "coverage50": [0.45, 0.5], "coverage90": [0.85, 0.9]})
    return {
        "spatial": (predicted, predicted.tables[K.PRED_KEY].var_names[0]),
        "coexpression": (predicted,),
        "metrics": (_results(),),
        "history": (hist,),
        "calibration": (coverages,),
    }[name]


@pytest.mark.parametrize("name", pl.__all__)
def test_output_arguments_refused_before_drawing(predicted, name, tmp_path):
    """A bad ``save``, ``overwrite`` or ``dpi`` is an error before any figure is made or file written."""
    plot, data = getattr(pl, name), _plot_args(name, predicted)
    existing = tmp_path / "fig.png"
    existing.write_bytes(b"the user's figure")
    plt.close("all")
    for kwargs, err, match in [
        ({"save": existing}, FileExistsError, "overwrite"),
        ({"save": tmp_path}, FileExistsError, "existing folder"),
        ({"save": 3}, TypeError, "`save` must be a path"),
        ({"overwrite": "yes"}, TypeError, "`overwrite` must be True or False"),
        ({"dpi": 0}, ValueError, "`dpi` must be a positive number"),
        ({"dpi": "high"}, ValueError, "`dpi` must be a positive number"),
    ]:
        with pytest.raises(err, match=match):
            plot(*data, **kwargs)
        assert plt.get_fignums() == [], kwargs
    assert existing.read_bytes() == b"the user's figure"
    assert isinstance(plot(*data, dpi=50.5, return_fig=True), Figure)


@pytest.mark.parametrize("name", pl.__all__)
def test_output_arguments_in_signature_and_docstring(name):
    """Each plotting function lists the output arguments keyword-only (with their type hints, for the API docs)
    after its own, and documents them before its Returns section."""
    import inspect

    sig = inspect.signature(getattr(pl, name))
    kw = inspect.Parameter.KEYWORD_ONLY
    assert [(p.name, p.kind, p.default, p.annotation) for p in list(sig.parameters.values())[-4:]] == [
        ("save", kw, None, "str | os.PathLike | None"),
        ("return_fig", kw, False, "bool"),
        ("dpi", kw, 100, "int"),
        ("overwrite", kw, False, "bool"),
    ]
    assert {"figsize", "ax"} <= set(sig.parameters)
    assert sig.return_annotation == "Figure | None"
    doc = inspect.cleandoc(getattr(pl, name).__doc__)
    assert doc.index("\nsave\n") < doc.index("\noverwrite\n") < doc.index("\nReturns\n-------\n")


def test_prediction_renders_with_spatialdata_plot(predicted):
    """The prediction table renders with spatialdata-plot as it is (render_images + render_shapes(color=gene)):
    the spots' colours follow the predicted values (viridis is monotonic in luminance)."""
    pytest.importorskip("spatialdata_plot")
    from scipy.stats import spearmanr

    sdata = predicted
    table = sdata.tables[K.PRED_KEY]
    gene = table.var_names[0]
    ax = (
        sdata.pl.render_images("S2_image")
        .pl.render_shapes("S2_spots", color=gene, table_name=K.PRED_KEY)
        .pl.show(coordinate_systems="S2", return_ax=True)
    )
    (patches,) = [c for c in ax.collections if len(c.get_facecolors()) == table.n_obs]
    rgb = patches.get_facecolors()[:, :3]
    luminance = rgb @ np.array([0.2126, 0.7152, 0.0722])
    ids = sdata.shapes["S2_spots"].index.to_numpy()  # the patches follow the shapes' order
    values = pd.Series(np.asarray(table[:, gene].X).ravel(), index=table.obs[K.INSTANCE_KEY].to_numpy())
    assert spearmanr(luminance, values.loc[ids].to_numpy()).statistic > 0.99
