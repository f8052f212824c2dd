"""Shared fixtures: tiny synthetic data made in the test, and the real-data location."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")


def _her2st_dir() -> Path | None:
    env = os.environ.get("STHINGE_DATA_DIR")
    if not env:
        return None
    for cand in (Path(env) / "her2st", Path(env)):
        if (cand / "counts").is_dir() and (cand / "spots").is_dir():
            return cand
    return None


HER2ST_DIR = _her2st_dir()
needs_her2st = pytest.mark.skipif(HER2ST_DIR is None, reason="Her2ST files not found: set STHINGE_DATA_DIR")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes caches into its own temporary folder (a cold cache), never into the user's."""
    from sthinge import settings

    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setattr(settings, "_cachedir", cache)
    yield


def _saved_settings():
    """Save ``settings.verbosity``, ``device``, ``seed`` and ``datadir``; put them back afterwards (through the
    properties, so the logger level follows the verbosity back)."""
    from sthinge import settings

    saved = settings.verbosity, settings.device, settings.seed, settings._datadir
    yield
    settings.verbosity, settings.device, settings.seed, settings._datadir = saved


@pytest.fixture(autouse=True)
def _restore_settings():
    """Whatever a test sets the settings to is undone after it: no test depends on the order tests run in."""
    yield from _saved_settings()


@pytest.fixture(autouse=True, scope="module")
def _restore_settings_module():
    """The same for module-scoped fixtures: their settings do not reach the next module."""
    yield from _saved_settings()


@pytest.fixture(scope="module")
def quiet():
    """Verbosity 1 (warnings only, no progress bars) for the rest of the module that asks for it (module-scoped
    fixtures that train use it); the previous level comes back after the module."""
    from sthinge import settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(settings, "verbosity", 1)
        yield


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for the module that asks for it (tiny models: as fast, and far faster on a busy machine,
    with no spinning threads); the previous count comes back after the module."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def _synthetic_session():
    import sthinge as st

    return st.datasets.synthetic(n_sections=3, n_spots=64, n_genes=40, seed=0)


@pytest.fixture
def sdata(_synthetic_session):
    """A fresh small synthetic SpatialData (3 sections x 64 spots x 40 genes, with images)."""
    import copy

    from spatialdata import SpatialData

    src = _synthetic_session
    return SpatialData(
        images=dict(src.images),  # images are never modified in place by sthinge
        shapes={k: v.copy() for k, v in src.shapes.items()},
        tables={k: copy.deepcopy(v) for k, v in src.tables.items()},
    )


@pytest.fixture
def adata(sdata):
    """The table of :func:`sdata` as a plain AnnData."""
    return sdata.tables["table"].copy()


@pytest.fixture(scope="session")
def her2st_dir() -> Path:
    if HER2ST_DIR is None:
        pytest.skip("Her2ST files not found: set STHINGE_DATA_DIR")
    return HER2ST_DIR


@pytest.fixture
def sthinge_log(caplog):
    """The records of the "sthinge" logger (it does not propagate: caplog's handler is attached to it)."""
    import logging

    logger = logging.getLogger("sthinge")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.fixture(scope="session")
def tiny_fit_kw() -> dict:
    """``tl.fit`` keywords of the end-to-end tests: one epoch of the tiny preset, calibrated on two samples of two
    steps (predict with ``n_steps=2, n_samples=2`` to match)."""
    return dict(
        backbone="tiny",
        max_epochs=1,
        min_epochs=0,
        batch_size=16,
        curriculum_epochs=1,
        val_metric="loss",
        calibration_samples=2,
        calibration_steps=2,
    )
