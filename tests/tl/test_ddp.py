"""Data-parallel training: ``tl.fit(devices=2)`` through Lightning's DDP, on CPU with 2 gloo processes.

``ddp_spawn`` trains in two worker processes; the trained weights (Lightning sends rank 0's back), the history
and the best epoch (``tl._train._collect_worker_results``, which also raises if the ranks disagree) must reach the
``HingeModel`` returned in this process. Starting the workers (each imports torch and Lightning) dominates the
runtime, hence ``slow``.
"""

import copy

import numpy as np
import pytest
import torch

import sthinge as st
from sthinge import _constants as K

pytestmark = pytest.mark.slow

EMB = "X_factors"
FIT_KW = dict(
    embedding_key=EMB,
    train_sections=["S1", "S2"],
    batch_size=32,
    lr=1e-3,
    min_epochs=0,
    curriculum_epochs=1,
    val_metric="loss",
)


def _prepare(seed=0, n_sections=3, n_spots=64, n_genes=24):
    """Tiny synthetic SpatialData (as in test_fit_predict.py): the true image factors + noise as embedding."""
    sdata = st.datasets.synthetic(n_sections=n_sections, n_spots=n_spots, n_genes=n_genes, seed=seed)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=n_genes, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(seed)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 4))].astype(np.float32)
    return sdata


def _trainable(module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in module.named_parameters() if p.requires_grad}


def test_ddp_spawn_two_cpu_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers share the CPU; one thread each
    monkeypatch.setattr(st.settings, "verbosity", 1)
    sdata = _prepare()
    torch.manual_seed(0)
    backbone = st.models.CellFM.from_preset("tiny")
    frozen_before = copy.deepcopy(backbone.state_dict())

    kw = {**FIT_KW, "backbone": backbone}
    model = st.tl.fit(
        sdata, max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", checkpoint_dir=tmp_path, **kw
    )

    # the history came back from the workers: one entry per epoch, train and (rank-reduced) validation losses
    assert [h["epoch"] for h in model.history] == [0.0, 1.0]
    assert all(np.isfinite(h["train_loss"]) and np.isfinite(h["val"]) for h in model.history)
    assert model.history[-1]["val"] < model.history[0]["val"]  # so the last epoch is the best one

    # the returned weights are trained: the official init starts every SoftAdaLN projection at exactly 0
    params = _trainable(model.module)
    proj = [v for n, v in params.items() if n.endswith("adaln.proj.weight") or n == "final_layer.proj.weight"]
    assert proj and all(v.abs().max() > 0 for v in proj)
    # ... and they are what rank 0 ended with (its last checkpoint, written after the last, best, epoch)
    ckpt = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 1  # the second (last) epoch's checkpoint, not an earlier one
    steps_per_epoch = ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]["completed"]
    assert steps_per_epoch > 0 and ckpt["global_step"] == 2 * steps_per_epoch  # both epochs' optimizer steps
    assert ckpt["sthinge_history"] == model.history  # the history returned is this checkpoint's
    saved = {k.removeprefix("module."): v for k, v in ckpt["state_dict"].items()}
    assert set(params) <= set(saved)
    for n, v in params.items():
        torch.testing.assert_close(v, saved[n], rtol=0, atol=0, msg=n)
    # the frozen backbone did not move
    state = model.module.state_dict()
    checked = 0
    for n, v in frozen_before.items():
        key = {"encoder.": "retentionblocks."}.get(n[:8], n[:8]) + n[8:]
        if key in state:
            torch.testing.assert_close(state[key], v, rtol=0, atol=0, msg=n)
            checked += 1
    assert checked > len(frozen_before) // 2  # the key mapping found the backbone (most of it is kept as is)

    # the model predicts in this process
    pred = st.tl.predict(sdata, model, n_steps=3, sections=["S3"], inplace=False)
    assert pred.shape == (64, len(model.genes))
    assert np.isfinite(pred.X).all()
    assert f"{K.PRED_KEY}{K.STD_SUFFIX}" in pred.layers and EMB in sdata.tables[K.TABLE_KEY].obsm
