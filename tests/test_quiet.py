"""Third-party warnings that sthinge causes, and that its users cannot act on, stay out of their output.

Each test runs the call that used to warn, records every warning, and fails if the silenced one is among them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K

AUTOSHARD = "zarr v3 autosharding"
EVAL_MODE = "in eval mode at the start of training"


def _recorded(fn, *args, **kwargs) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fn(*args, **kwargs)
    return [str(w.message) for w in caught]


def _needs_autoshard_setting():
    import anndata as ad

    if not hasattr(getattr(ad, "settings", None), "auto_shard_zarr_v3"):
        pytest.skip("this anndata has no `auto_shard_zarr_v3` setting (and no warning about it)")


def test_demo_zarr_writer_does_not_warn_about_autosharding(tmp_path):
    """The demo's predictions.zarr: anndata warned once per array that its sharding default will change."""
    import anndata as ad
    from spatialdata import SpatialData

    from sthinge._utils import _write_spatialdata as _write_zarr

    _needs_autoshard_setting()
    table = ad.AnnData(np.arange(12, dtype=np.float32).reshape(4, 3))
    table.obsm["spatial"] = np.zeros((4, 2))
    before = ad.settings.auto_shard_zarr_v3
    messages = _recorded(_write_zarr, SpatialData(tables={"truth": table}), tmp_path / "predictions.zarr")
    assert not [m for m in messages if AUTOSHARD in m]
    assert ad.settings.auto_shard_zarr_v3 == before  # the setting is put back
    back = SpatialData.read(tmp_path / "predictions.zarr")
    np.testing.assert_array_equal(back.tables["truth"].X, table.X)


def test_demo_zarr_writer_keeps_the_users_sharding_choice(tmp_path):
    import anndata as ad

    from sthinge._utils import _write_spatialdata as _write_zarr

    _needs_autoshard_setting()
    seen = []

    class Recorder:
        def write(self, path):
            seen.append(ad.settings.auto_shard_zarr_v3)

    for choice in (True, False, None):
        with ad.settings.override(auto_shard_zarr_v3=choice):
            _write_zarr(Recorder(), tmp_path)
    assert seen == [True, False, False]  # only an unset choice is made (unsharded, today's default)


def test_fit_with_a_frozen_eval_mode_backbone_does_not_warn(quiet):
    """A backbone loaded from a file is in eval mode; Lightning warned about its modules at the start of `fit`."""
    from sthinge.models import CellFM
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=2, n_spots=32, n_genes=16, seed=0)
    normalize(sdata)
    select_genes(sdata, n_top=16, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    table.obsm["X_factors"] = table.obsm["synthetic_factors"].astype(np.float32)
    backbone = CellFM.from_preset("tiny").eval()  # as `load_cellfm` returns it
    messages = _recorded(
        st.tl.fit,
        sdata,
        backbone=backbone,
        embedding_key="X_factors",
        train_sections=["S1"],
        batch_size=16,
        max_epochs=1,
        min_epochs=0,
        curriculum_epochs=1,
        val_metric="loss",
    )
    assert not [m for m in messages if EVAL_MODE in m]
