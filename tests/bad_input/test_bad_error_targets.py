"""Errors that point at the right thing: the argument, value or path at fault, not a symptom found further on.

A NaN coordinate is reported as such (not as a spot "outside the image"), a grid spacing larger than the image as
that (not as "no tissue"), a grid name taken by another element as that (not spatialdata's internal error), a
device the machine lacks names `device` (not torch's driver error), an unwritable destination names the
destination (not a hidden temporary file) and fails before the work whose result it would lose, and an empty
plot input names the argument (not matplotlib's error). Each call must raise before any work or write, and leave
the user's object exactly as it was (see ``bad_input_suite.run_case``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from bad_input_suite import FIT, Registry, run_case

import sthinge as st
from sthinge import _constants as K

REGISTRY = Registry()
case = REGISTRY.case


def _predicted(env):
    st.tl.predict(env.sdata, env.model, n_steps=2, sections="S2")
    return env.sdata


def _unwritable() -> Path:
    """A path under a folder that refuses writes even to root (``/sys``); skip where there is none."""
    probe = Path("/sys/sthinge-bad-input")
    if not Path("/sys").is_dir():
        pytest.skip("no /sys folder to stand for an unwritable folder")
    try:
        probe.mkdir()
    except OSError:
        return probe / "sub"
    probe.rmdir()
    pytest.skip("/sys is writable here")


# ---------------------------------------------------------------------------------------------------------------
# 1. non-finite coordinates are reported as such, naming where they are
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"1 spot\(s\) of section 'all' have NaN or infinite coordinates in `obsm\['spatial'\]`, e\.g\. "
    r"\['1'\]",
)
def embed_nan_spot_coordinate(env):
    a = env.visium(spots=[(20.0, 20.0), (np.nan, 30.0)])
    return a, lambda: st.pp.embed_histology(a)


@case(
    ValueError,
    r"2 spot\(s\) of section 'all' have NaN or infinite coordinates in `obsm\['spatial'\]`, e\.g\. "
    r"\['0', '2'\]",
)
def embed_infinite_spot_coordinates(env):
    a = env.visium(spots=[(20.0, np.inf), (40.0, 30.0), (-np.inf, 10.0)])
    return a, lambda: st.pp.embed_histology(a)


@case(
    ValueError,
    r"1 spot\(s\) of section 'S1' have NaN or infinite coordinates in the shapes element 'S1_spots', "
    r"e\.g\. \['S1_2x0'\]",
)
def embed_nan_shape_centre(env):
    from shapely.geometry import Point

    shapes = env.sdata.shapes["S1_spots"]
    shapes.loc[shapes.index[2], "geometry"] = Point(np.nan, np.nan)
    return env.sdata, lambda: st.pp.embed_histology(env.sdata)


@case(ValueError, r"1 spot\(s\) of section 'S2' have NaN or infinite coordinates in `obsm\['spatial'\]`")
def spatial_plot_nan_coordinate(env):
    sdata = _predicted(env)
    table = sdata.tables[K.TABLE_KEY]
    row = int(np.flatnonzero(table.obs["section"].astype(str) == "S2")[3])
    table.obsm["spatial"][row, 1] = np.nan
    return sdata, lambda: st.pl.spatial(sdata, env.model.genes[0])


@case(
    ValueError,
    r"`obsm\['spatial'\]` holds NaN or infinite coordinates for 1 predicted spot\(s\); the SSIM needs "
    r"the spot positions",
)
def evaluate_ssim_nan_coordinate(env):
    model = st.tl.fit_baseline(env.sdata, embedding_key="X_test", train_sections=["S1"])
    a = env.adata
    st.tl.predict_baseline(a, model, sections=["S2"])
    del a.obs["array_x"]  # no array grid: SSIM places the spots by their coordinates
    a.obsm["spatial"][-1, 0] = np.nan
    return a, lambda: st.tl.evaluate(a, pred_key="ridge", metrics=["pcc5", "ssim"])


# ---------------------------------------------------------------------------------------------------------------
# 2. a grid coarser than the image or the tissue says so (with the image size in µm), not "no tissue"
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"`spacing_um`=1e\+06 is larger than the image 'S1_image', [\d.]+ x [\d.]+ µm \(width x height at "
    r"`mpp`=[\d.]+\): no grid point fits",
)
def grid_spacing_larger_than_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=1e6)


@case(
    ValueError,
    r"`spacing_um`=700 is too large for the tissue of 'S1_image' \(about [\d.]+ mm² in all; image "
    r"[\d.]+ x [\d.]+ µm",
)
def grid_spacing_larger_than_tissue(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=700.0)


@case(ValueError, r"`spot_diameter_um` 5000 µm is larger than the image 'S1_image', [\d.]+ x [\d.]+ µm")
def grid_spot_diameter_larger_than_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=200.0, spot_diameter_um=5000.0)


@case(ValueError, r"`spot_diameter_um` \(by default `spacing_um`\) 1500 µm is larger than the image 'S1_image'")
def grid_default_spot_diameter_larger_than_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=1500.0)


# ---------------------------------------------------------------------------------------------------------------
# 3. where make_grid writes: a name of another element, or an existing grid without `overwrite=True`
# ---------------------------------------------------------------------------------------------------------------
@case(
    ValueError,
    r"`key_added` 'table' is the name of the existing table element 'table': SpatialData element "
    r"names are unique",
)
def grid_key_added_names_a_table(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", key_added="table")


@case(ValueError, r"`table_key_added` 'S2_image' is the name of the existing image element 'S2_image'")
def grid_table_key_added_names_an_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", table_key_added="S2_image")


@case(
    TypeError,
    r"make_grid\(\) no longer takes `table_key`: it named the table written, which is now "
    r"`table_key_added=`",
)
def grid_old_table_key(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", table_key="S1_grid_table")


@case(ValueError, r"`key_added` 's1_IMAGE' is the name of the existing image element 'S1_image'")
def grid_key_added_case_variant_of_an_image(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", key_added="s1_IMAGE")


@case(ValueError, r"`key_added` 'S1_grid': the shapes element 'S1_grid' already exists; pass `overwrite=True`")
def grid_existing_shapes_without_overwrite(env):
    st.pp.make_grid(env.sdata, "S1_image", spacing_um=200.0)
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", spacing_um=150.0)


@case(
    ValueError,
    r"`table_key_added` 'S1_grid_table': the table 'S1_grid_table' already exists; pass "
    r"`overwrite=True`",
)
def grid_existing_table_without_overwrite(env):
    st.pp.make_grid(env.sdata, "S1_image", spacing_um=200.0)
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", key_added="g2", table_key_added="S1_grid_table")


@case(ValueError, r"`key_added` 'S1_spots' names shapes that table 'table' annotates; replacing them would detach")
def grid_replacing_annotated_shapes(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", key_added="S1_spots", overwrite=True)


@case(TypeError, r"`overwrite` must be True or False, got 'yes'")
def grid_overwrite_not_bool(env):
    return env.sdata, lambda: st.pp.make_grid(env.sdata, "S1_image", overwrite="yes")


# ---------------------------------------------------------------------------------------------------------------
# 4. a device this machine lacks names `device` (or `accelerator`), before any work
# ---------------------------------------------------------------------------------------------------------------
_NO_DEVICE = r"is not available on this machine: it has .*; available: 'cpu'"


@case(ValueError, r"`device` 'cuda:99' " + _NO_DEVICE)
def embed_unavailable_device(env):
    return env.sdata, lambda: st.pp.embed_histology(env.sdata, device="cuda:99")


@case(ValueError, r"`device` 'cuda:99' " + _NO_DEVICE)
def predict_unavailable_device(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=2, device="cuda:99")


@case(ValueError, r"`device` 'cuda:99' " + _NO_DEVICE)
def predict_unavailable_device_before_loading(env):
    folder = env.model_dir
    return folder, lambda: st.tl.predict(env.sdata, folder, device="cuda:99")


@case(ValueError, r"`device` 'cuda:99' " + _NO_DEVICE)
def load_unavailable_device(env):
    return env.model_dir, lambda: st.tl.HingeModel.load(env.model_dir, device="cuda:99")


@case(ValueError, r"`settings\.device` 'cuda:99' " + _NO_DEVICE)
def predict_unavailable_default_device(env):
    def call():
        old = st.settings.device
        st.settings.device = "cuda:99"
        try:
            st.tl.predict(env.sdata, env.model, n_steps=2)
        finally:
            st.settings.device = old

    return env.sdata, call


@case(ValueError, r"`device` must be one of .*got 'cuda:x'")
def predict_malformed_device(env):
    return env.sdata, lambda: st.tl.predict(env.sdata, env.model, n_steps=2, device="cuda:x")


@case(ValueError, r"`accelerator` 'mps' " + _NO_DEVICE)
def fit_unavailable_accelerator(env):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    return env.sdata, lambda: st.tl.fit(env.sdata, **FIT, max_epochs=1, accelerator="mps")


@case(ValueError, r"`accelerator` 'mps' " + _NO_DEVICE)
def pretrain_unavailable_accelerator(env):
    if torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    return env.sdata, lambda: st.tl.pretrain_backbone(env.sdata, max_epochs=1, accelerator="mps", save=env.tmp / "b.pt")


# ---------------------------------------------------------------------------------------------------------------
# 5. an unwritable destination names the destination, before the work
# ---------------------------------------------------------------------------------------------------------------
@case(
    PermissionError,
    r"`save` '/sys/sthinge-bad-input/sub/fig\.png' cannot be written: folder '/sys' is not "
    r"writable",
)
def spatial_plot_unwritable_save(env):
    sdata = _predicted(env)
    target = _unwritable() / "fig.png"
    return sdata, lambda: st.pl.spatial(sdata, env.model.genes[0], save=target)


@case(PermissionError, r"`save` '/sys/sthinge-bad-input/sub/history\.png' cannot be written")
def history_plot_unwritable_save(env):
    target = _unwritable() / "history.png"
    return env.model, lambda: st.pl.history(env.model, save=target)


@case(PermissionError, r"`save` '/sys/sthinge-bad-input/sub/b\.pt' cannot be written")
def pretrain_unwritable_save(env):
    target = _unwritable() / "b.pt"
    return env.sdata, lambda: st.tl.pretrain_backbone(env.sdata, max_epochs=1, save=target)


def test_atomic_writers_name_the_destination():
    from sthinge._utils import _atomic_path
    from sthinge.io import atomic_write

    folder = _unwritable()
    with pytest.raises(
        PermissionError,
        match=r"Cannot write '/sys/sthinge-bad-input/sub/model': folder "
        r"'/sys/sthinge-bad-input/sub' is not writable",
    ) as info:
        with _atomic_path(folder / "model"):
            raise AssertionError("the body must not run")  # pragma: no cover
    assert ".tmp" not in str(info.value)
    with pytest.raises(PermissionError, match=r"Cannot write '/sys/x\.bin': folder '/sys' is not writable") as info:
        with atomic_write(folder.parent.parent / "x.bin") as tmp:
            tmp.write_bytes(b"1")
    assert ".tmp" not in str(info.value)


# ---------------------------------------------------------------------------------------------------------------
# 6. an unwritable cache fails at the start, not after pre-training or downloading
# ---------------------------------------------------------------------------------------------------------------
_CACHE = r"`settings\.cachedir \(STHINGE_CACHE_DIR\)` '/sys/sthinge-bad-input/sub/"
_CACHE_BACKBONES = _CACHE + r"backbones' cannot be written: folder '/sys' is not writable"
_CACHE_DOWNLOADS = _CACHE + r"her2st' is not writable"


def _never(*args, **kwargs):
    raise AssertionError("reached the work that an unwritable cache must prevent")


def test_unwritable_cache_fails_before_pretraining(env, monkeypatch):
    import sthinge.tl._backbone as P
    import sthinge.tl._corpus as C

    monkeypatch.setattr(st.settings, "_cachedir", _unwritable())
    monkeypatch.setattr(C, "_build_corpus", _never)  # the data and training
    monkeypatch.setattr(P, "pretrain_her2st", _never)
    run_case(
        env,
        lambda e: (e.sdata, lambda: st.tl.pretrain_backbone(e.sdata, max_epochs=1)),
        PermissionError,
        _CACHE_BACKBONES,
    )
    run_case(env, lambda e: (e.tmp, lambda: P.default_backbone()), PermissionError, _CACHE_BACKBONES)


def test_unwritable_cache_fails_before_downloading(env, monkeypatch):
    import sthinge.datasets._her2st as H

    monkeypatch.setattr(st.settings, "_cachedir", _unwritable())
    monkeypatch.setattr(st.settings, "_datadir", None)
    monkeypatch.delenv("STHINGE_DATA_DIR", raising=False)
    monkeypatch.setattr(H, "_download", _never)
    run_case(env, lambda e: (e.tmp, lambda: st.datasets.her2st("C2")), PermissionError, _CACHE_DOWNLOADS)


# ---------------------------------------------------------------------------------------------------------------
# 7. empty plot input names the argument
# ---------------------------------------------------------------------------------------------------------------
@case(ValueError, r"`table` is empty \(no rows\)")
def metrics_empty_table(env):
    frame = pd.DataFrame({"method": pd.Series([], dtype=str), "pcc50": pd.Series([], dtype=float)})
    return frame, lambda: st.pl.metrics(frame)


@case(ValueError, r"`table` column 'pcc50' holds no numeric value in the groups \['a', 'b'\]")
def metrics_all_missing(env):
    frame = pd.DataFrame({"method": ["a", "b"], "pcc50": [np.nan, np.nan]})
    return frame, lambda: st.pl.metrics(frame)


@case(ValueError, r"`table` column 'pcc50' holds no numeric value")
def metrics_not_numbers(env):
    frame = pd.DataFrame({"method": ["a", "b"], "pcc50": ["high", "low"]})
    return frame, lambda: st.pl.metrics(frame)


@case(ValueError, r"`order` is empty")
def metrics_empty_order(env):
    frame = pd.DataFrame({"method": ["a", "b"], "pcc50": [0.1, 0.2]})
    return frame, lambda: st.pl.metrics(frame, order=[])


@case(ValueError, r"`genes` must name at least two genes for a co-expression matrix; got \['\w+'\]")
def coexpression_one_gene(env):
    sdata = _predicted(env)
    return sdata, lambda: st.pl.coexpression(sdata, genes=[env.model.genes[0]])


@case(ValueError, r"`genes` is empty")
def coexpression_no_gene(env):
    sdata = _predicted(env)
    return sdata, lambda: st.pl.coexpression(sdata, genes=[])


@case(ValueError, r"The prediction table 'sthinge' \(`pred_key`\) holds no spot")
def spatial_plot_empty_prediction(env):
    import anndata as ad

    sdata = _predicted(env)
    pred = sdata.tables[K.PRED_KEY]
    sdata.tables[K.PRED_KEY] = ad.AnnData(np.zeros((0, pred.n_vars), np.float32), var=pred.var.copy())
    return sdata, lambda: st.pl.spatial(sdata, env.model.genes[0])


# ---------------------------------------------------------------------------------------------------------------
# the suite
# ---------------------------------------------------------------------------------------------------------------
def test_enough_distinct_cases():
    names = REGISTRY.names()
    assert len(names) == len(set(names)) and len(names) >= 25


@pytest.mark.parametrize(("make", "exc", "match"), REGISTRY.cases)
def test_bad_input(env, make, exc, match):
    run_case(env, make, exc, match)


# ---------------------------------------------------------------------------------------------------------------
# what is accepted
# ---------------------------------------------------------------------------------------------------------------
def test_grid_overwrite_replaces_an_earlier_grid(env):
    st.pp.make_grid(env.sdata, "S1_image", spacing_um=200.0)
    coarse = env.sdata.tables["S1_grid_table"].n_obs
    st.pp.make_grid(env.sdata, "S1_image", spacing_um=120.0, overwrite=True)
    fine = env.sdata.tables["S1_grid_table"]
    assert fine.n_obs > coarse and len(env.sdata.shapes["S1_grid"]) == fine.n_obs
    # inplace=False writes nothing into `data`, so an existing grid needs no `overwrite`
    out = st.pp.make_grid(env.sdata, "S1_image", spacing_um=200.0, inplace=False)
    assert out.tables["S1_grid_table"].n_obs == coarse


def test_available_devices_resolve():
    assert st.settings.resolve_device("cpu") == torch.device("cpu")
    assert st.settings.resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert st.settings.resolve_device("auto").type in ("cpu", "cuda", "mps")
    if torch.cuda.is_available():
        assert st.settings.resolve_device("cuda:0") == torch.device("cuda:0")
