"""End-to-end fit -> predict -> save/load on tiny synthetic data (seconds, CPU)."""

import numpy as np
import pytest

import sthinge as st
from sthinge import _constants as K

EMB = "X_factors"


def _prepare(seed=0, n_sections=3, n_spots=64, n_genes=24):
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=n_sections, n_spots=n_spots, n_genes=n_genes, seed=seed)
    normalize(sdata)
    select_genes(sdata, n_top=n_genes, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    # the true image factors plus nuisance features: a fast, informative embedding for tests
    rng = np.random.default_rng(seed)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 4))].astype(np.float32)
    return sdata


FIT_KW = dict(
    backbone="tiny",
    embedding_key=EMB,
    train_sections=["S1", "S2"],
    batch_size=32,
    lr=1e-3,
    min_epochs=0,
    curriculum_epochs=1,
    val_metric="loss",
)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (tests/conftest.py)


@pytest.fixture(scope="module")
def trained(quiet):
    sdata = _prepare()
    model = st.tl.fit(sdata, max_epochs=4, **FIT_KW)
    return sdata, model


def test_fit_history_and_frozen_backbone(trained):
    sdata, model = trained
    assert len(model.history) == 4
    losses = [h["train_loss"] for h in model.history]
    assert losses[-1] < losses[0]
    vals = [h["val"] for h in model.history]
    assert min(vals[1:]) < vals[0]
    assert model.genes == sdata.tables[K.TABLE_KEY].uns[K.GENES_KEY]["genes"]
    # only the new parameters train
    frozen = [n for n, p in model.module.named_parameters() if not p.requires_grad]
    assert any(n.startswith("retentionblocks.0.attn") for n in frozen)
    assert all("adaln" not in n and "cond_embed" not in n for n in frozen)
    # tl.fit's default modulation: the hidden-unit scales exist and train
    assert model.module.config.modulation == "hidden"
    assert any("ffn_hidden" in n for n, p in model.module.named_parameters() if p.requires_grad)


def test_fit_config_defaults_and_the_paper_switch():
    from sthinge.tl._model import FIT_MODULATION, _hinge_config

    assert FIT_MODULATION == "hidden"
    assert _hinge_config(None, 5, 3).modulation == "hidden"
    assert _hinge_config({"modulation": "paper"}, 5, 3).modulation == "paper"  # the paper's design, by name
    assert _hinge_config({"variant": "hist-affine-ln"}, 5, 3).modulation == "paper"  # hidden is not defined there
    assert _hinge_config({}, 5, 3).likelihood == "gaussian"


def test_default_learning_rate_scales_with_the_backbone_width():
    from sthinge.tl._model import default_lr

    assert default_lr(1536) == pytest.approx(1e-4)  # the paper's, on CellFM's width
    assert default_lr(512) == pytest.approx(3e-4)  # scGPT whole-human
    assert default_lr(128) == pytest.approx(1e-3)  # the offline default backbone (capped)
    assert default_lr(32) == pytest.approx(1e-3)


def test_fit_uses_the_default_learning_rate(tiny_fit_kw):
    from sthinge.tl._model import default_lr

    sdata = _prepare()
    model = st.tl.fit(sdata, **{**tiny_fit_kw, "embedding_key": EMB, "train_sections": ["S1", "S2"]})
    assert model.history[0]["lr"] == pytest.approx(default_lr(model.module.backbone_config.d_model))


def test_predict_writes_linked_table(trained):
    sdata, model = trained
    st.tl.predict(sdata, model, n_steps=5, n_samples=3, sections=["S3"], return_samples=True)
    pred = sdata.tables[K.PRED_KEY]
    assert pred.shape == (64, len(model.genes))
    assert list(pred.var_names) == model.genes
    assert pred.X.shape == pred.shape and np.isfinite(pred.X).all()
    # the mean is X alone (no copy of it in a layer); the std and the bounds of the 50 and 90 % intervals
    assert set(pred.layers) == {f"{K.PRED_KEY}{s}" for s in (K.STD_SUFFIX, "_q25", "_q75", "_q05", "_q95")}
    assert pred.uns[K.PRED_KEY]["intervals"] == "conformal" and model.calibration is not None
    assert (pred.layers["sthinge_q05"] <= pred.layers["sthinge_q25"]).all()
    assert (pred.layers["sthinge_q25"] <= pred.X).all() and (pred.X <= pred.layers["sthinge_q75"]).all()
    assert (pred.layers["sthinge_q75"] <= pred.layers["sthinge_q95"]).all()
    std = pred.layers[f"{K.PRED_KEY}{K.STD_SUFFIX}"]
    assert std.shape == pred.shape and (std >= 0).all() and std.max() > 0
    samples = pred.obsm[f"{K.PRED_KEY}{K.SAMPLES_SUFFIX}"]
    assert samples.shape == (64, 3, len(model.genes))
    # draws of the Gaussian decoder (fit's default); X is the mean of the distributions they were drawn from
    assert (samples >= 0).all() and samples.std(1).mean() > 0
    assert np.abs(samples.mean(1) - pred.X).mean() < 3 * (std / np.sqrt(3)).mean()  # within their sampling error
    assert (pred.obs[K.SECTION_KEY] == "S3").all()
    attrs = pred.uns["spatialdata_attrs"]
    assert attrs["region"] == "S3_spots" or attrs["region"] == ["S3_spots"]
    np.testing.assert_array_equal(pred.obsm[K.SPATIAL_KEY], sdata.tables[K.TABLE_KEY].obsm[K.SPATIAL_KEY][128:])
    assert pred.uns[K.PRED_KEY]["n_steps"] == 5
    # the source table (the truth) is untouched
    assert K.PRED_KEY not in sdata.tables[K.TABLE_KEY].layers


def test_squidpy_runs_on_prediction(trained):
    import squidpy as sq

    sdata, model = trained
    pred = st.tl.predict(sdata, model, n_steps=3, sections=["S3"], inplace=False)
    sq.gr.spatial_neighbors(pred, coord_type="generic", n_neighs=4)
    sq.gr.spatial_autocorr(pred, mode="moran", genes=list(pred.var_names[:5]), n_perms=None, n_jobs=1)
    assert "moranI" in pred.uns
    assert pred.uns["moranI"].shape[0] == 5


def test_predict_not_inplace_returns_the_table_and_writes_nothing(trained):
    """`inplace=False` returns the prediction table (an AnnData, also for SpatialData) and leaves `data` as it is;
    the removed `copy` is a TypeError naming `inplace`."""
    from anndata import AnnData

    sdata, model = trained
    tables, table = sorted(sdata.tables), sdata.tables[K.TABLE_KEY]
    uns, obsm = sorted(table.uns), sorted(table.obsm)
    pred = st.tl.predict(sdata, model, n_steps=2, sections="S3", key_added="trial", inplace=False)
    assert isinstance(pred, AnnData) and pred.shape == (64, len(model.genes))
    assert pred.uns["trial"]["source_table"] == K.TABLE_KEY
    assert sorted(sdata.tables) == tables and sorted(table.uns) == uns and sorted(table.obsm) == obsm
    adata = table.copy()
    out = st.tl.predict(adata, model, n_steps=2, sections="S3", key_added="trial", inplace=False)
    assert isinstance(out, AnnData) and out.n_obs == 64 and "trial" not in adata.obsm and "trial" not in adata.uns
    with pytest.raises(TypeError, match="inplace=False"):
        st.tl.predict(sdata, model, n_steps=2, copy=True)
    with pytest.raises(TypeError, match="`inplace`"):
        st.tl.predict(sdata, model, n_steps=2, inplace="no")
    assert sorted(sdata.tables) == tables


def test_save_load_identical_predictions(trained, tmp_path):
    sdata, model = trained
    path = model.save(tmp_path / "model")
    loaded = st.tl.HingeModel.load(path)
    assert loaded.genes == model.genes and loaded.embedding_key == model.embedding_key
    a = st.tl.predict(sdata, model, n_steps=4, n_samples=2, sections="S3", seed=7, inplace=False)
    b = st.tl.predict(sdata, loaded, n_steps=4, n_samples=2, sections="S3", seed=7, inplace=False)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.layers["sthinge_std"], b.layers["sthinge_std"])
    c = st.tl.predict(sdata, loaded, n_steps=4, n_samples=2, sections="S3", seed=8, inplace=False)
    assert not np.array_equal(a.X, c.X)
    assert len(loaded.history) == len(model.history)


def test_predict_result_does_not_depend_on_the_batch_size(trained):
    sdata, model = trained
    auto = st.tl.predict(sdata, model, n_steps=3, n_samples=2, sections="S3", seed=1, inplace=False)  # batch_size=None
    small = st.tl.predict(sdata, model, n_steps=3, n_samples=2, sections="S3", seed=1, batch_size=3, inplace=False)
    np.testing.assert_allclose(auto.X, small.X, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(auto.layers["sthinge_std"], small.layers["sthinge_std"], rtol=1e-5, atol=1e-5)


def test_predict_anndata_input(trained):
    sdata, model = trained
    adata = sdata.tables[K.TABLE_KEY].copy()
    st.tl.predict(adata, model, n_steps=3)
    mean = adata.obsm[K.PRED_KEY]
    assert list(mean.columns) == model.genes and mean.shape == (adata.n_obs, len(model.genes))
    assert np.isfinite(mean.to_numpy()).all()
    assert adata.obsm[f"{K.PRED_KEY}{K.STD_SUFFIX}"].shape == mean.shape


def _held_out_pcc(sdata, model, sections) -> float:
    """Pearson correlation of prediction and truth over the spots of ``sections``, averaged over genes."""
    from sthinge.tl._data import _expression

    table = sdata.tables[K.TABLE_KEY]
    rows = np.flatnonzero(table.obs[K.SECTION_KEY].isin(sections))
    truth, _ = _expression(table, None, model.genes, rows)
    pred = st.tl.predict(sdata, model, n_steps=10, n_samples=2, sections=sections, seed=0, inplace=False).X
    return float(np.nanmean([np.corrcoef(truth[:, g], pred[:, g])[0, 1] for g in range(truth.shape[1])]))


def _chance(n_spots: int) -> float:
    """Three standard deviations of a sample PCC between independent variables over ``n_spots`` spots (1 / sqrt(n - 1)
    each). It bounds the gene average too, however correlated the genes are: a mean PCC above it is no chance."""
    return 3 / np.sqrt(n_spots - 1)


def test_frozen_backbone_hinge_learns_the_image(monkeypatch):
    """The default variant (a frozen, pre-trained backbone; only the conditioning and adapters train) reads the image.

    The backbone is a tiny CellFM pre-trained on the training spots' expression only (as the demo's ``--synthetic``
    run does); the embedding is the true image factors of the synthetic data. On the held-out section the model's
    PCC is far above chance, while the same model trained on the same embedding shuffled across spots (a control
    that sees the same values, unrelated to the spots) stays at chance level.
    """
    import torch

    from sthinge.io import load_cellfm
    from sthinge.tl._pretrain import pretrain_backbone

    monkeypatch.setattr(st.settings, "verbosity", 1)
    sdata = st.datasets.synthetic(n_sections=3, n_spots=100, n_genes=12, image=False, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=12, train_sections=["S1", "S2"], vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    factors = np.asarray(table.obsm["synthetic_factors"], dtype=np.float32)
    table.obsm["X_true"] = factors
    table.obsm["X_shuffled"] = factors[np.random.default_rng(0).permutation(table.n_obs)]
    train = table[table.obs[K.SECTION_KEY].isin(["S1", "S2"])].copy()
    backbone = pretrain_backbone(
        train, preset="tiny", max_epochs=8, batch_size=32, lr=3e-3, val_fraction=0.0, seed=0
    ).sthinge_path
    kw = {**FIT_KW, "backbone": backbone, "max_epochs": 20, "min_epochs": 20, "lr": 3e-3, "seed": 0}

    model = st.tl.fit(sdata, **{**kw, "embedding_key": "X_true"})
    assert model.module.config.variant == "hinge"  # the default: the backbone is frozen
    frozen = load_cellfm(backbone).gene_emb
    assert not model.module.gene_emb.requires_grad and torch.equal(model.module.gene_emb.detach(), frozen)
    control = st.tl.fit(sdata, **{**kw, "embedding_key": "X_shuffled"})

    learnt, shuffled = _held_out_pcc(sdata, model, ["S3"]), _held_out_pcc(sdata, control, ["S3"])
    chance = _chance(int((table.obs[K.SECTION_KEY] == "S3").sum()))  # 0.30 for 100 spots
    assert learnt > chance, (learnt, shuffled, chance)
    assert abs(shuffled) < chance, (learnt, shuffled, chance)  # the control learnt no image signal
    assert learnt > shuffled


@pytest.mark.slow
def test_fit_learns_the_image(monkeypatch):
    """A model conditioned on the true image factors beats the same model conditioned on noise.

    Uses the Scratch variant (all weights trained): a *random* frozen backbone cannot carry gene-specific
    responses (that is what pre-training gives; the default variant with a pre-trained backbone:
    test_frozen_backbone_hinge_learns_the_image), so this checks the training loop, the conditioning path and the
    sampler end to end. Two held-out sections (200 spots) make chance level low.
    """
    monkeypatch.setattr(st.settings, "verbosity", 1)
    sdata = _prepare(seed=1, n_sections=4, n_spots=100, n_genes=12)
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(0)
    table.obsm["X_noise"] = rng.normal(size=(table.n_obs, 6)).astype(np.float32)
    kw = {**FIT_KW, "max_epochs": 50, "min_epochs": 50, "batch_size": 32, "lr": 1e-3, "config": {"variant": "scratch"}}
    good = st.tl.fit(sdata, **kw)
    bad = st.tl.fit(sdata, **{**kw, "embedding_key": "X_noise"})

    held_out = ["S3", "S4"]
    good_pcc, bad_pcc = _held_out_pcc(sdata, good, held_out), _held_out_pcc(sdata, bad, held_out)
    chance = _chance(int(table.obs[K.SECTION_KEY].isin(held_out).sum()))  # 0.21 for 200 spots
    assert good_pcc > chance, (good_pcc, bad_pcc, chance)
    assert abs(bad_pcc) < chance, (good_pcc, bad_pcc, chance)  # noise carries no signal
    assert good_pcc > bad_pcc


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"embedding_key": "X_missing"}, KeyError, "embedding_key"),
        ({"genes_key": "nope"}, KeyError, "genes_key"),
        ({"train_sections": ["S9"]}, ValueError, "train_sections"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"batch_size": 2.5}, TypeError, "batch_size"),
        ({"backbone": "huge"}, ValueError, "backbone"),
        ({"config": {"variant": "bogus"}}, ValueError, "config"),
        ({"config": {"bogus": 1}}, ValueError, "config"),
        ({"layer": "counts"}, KeyError, "layer"),
        ({"resume": True}, ValueError, "checkpoint_dir"),
    ],
)
def test_fit_bad_input(kwargs, err, match):
    sdata = _prepare(n_spots=16, n_genes=8)
    table = sdata.tables[K.TABLE_KEY]
    before = (set(table.obsm), set(table.uns), set(table.layers), set(sdata.tables))
    with pytest.raises(err, match=match):
        st.tl.fit(sdata, **{**FIT_KW, "max_epochs": 1, **kwargs})
    assert before == (set(table.obsm), set(table.uns), set(table.layers), set(sdata.tables))


def test_fit_refuses_raw_counts():
    sdata = _prepare(n_spots=16, n_genes=8)
    table = sdata.tables[K.TABLE_KEY]
    table.layers["counts"] = table.X.copy()
    with pytest.raises(ValueError, match="raw integer counts"):
        st.tl.fit(sdata, **{**FIT_KW, "max_epochs": 1, "layer": "counts"})


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"n_steps": 0}, ValueError, "n_steps"),
        ({"n_steps": 51}, ValueError, "n_steps"),
        ({"n_samples": 0}, ValueError, "n_samples"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"sections": ["S7"]}, ValueError, "sections"),
        ({"key_added": "table"}, ValueError, "key_added"),
    ],
)
def test_predict_bad_input_leaves_data_unchanged(trained, kwargs, err, match):
    sdata, model = trained
    tables = set(sdata.tables)
    with pytest.raises(err, match=match):
        st.tl.predict(sdata, model, **kwargs)
    assert set(sdata.tables) == tables


def test_predict_embedding_mismatch(trained):
    sdata, model = trained
    adata = sdata.tables[K.TABLE_KEY].copy()
    adata.obsm[EMB] = adata.obsm[EMB][:, :3]
    with pytest.raises(ValueError, match="features"):
        st.tl.predict(adata, model)
    adata.obsm[EMB] = sdata.tables[K.TABLE_KEY].obsm[EMB].copy()
    adata.obsm[EMB][5, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        st.tl.predict(adata, model)
    del adata.obsm[EMB]
    with pytest.raises(KeyError, match="embedding_key"):
        st.tl.predict(adata, model)
    assert K.PRED_KEY not in adata.obsm


def test_resume_continues_from_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(st.settings, "verbosity", 1)
    sdata = _prepare(n_spots=25, n_genes=8)
    kw = {**FIT_KW, "seed": 3, "checkpoint_dir": tmp_path / "ckpt"}
    st.tl.fit(sdata, **kw, max_epochs=2)
    assert (tmp_path / "ckpt" / "last.ckpt").is_file()
    resumed = st.tl.fit(sdata, **kw, max_epochs=3, resume=True)
    # the history of the first two epochs came back from the checkpoint, and one more epoch ran
    assert [h["epoch"] for h in resumed.history] == [0.0, 1.0, 2.0]


def _warnings(caplog_records, needle):
    return [r.getMessage() for r in caplog_records if needle in r.getMessage()]


def test_predict_compile_falls_back_to_eager(trained, monkeypatch, caplog):
    """A compiled model that fails at its first call is dropped with a warning; the result is the eager one."""
    import logging

    import torch

    sdata, model = trained
    calls = []

    class Broken(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.config, self.n_genes = inner.config, inner.n_genes

        def forward(self, *args, **kwargs):
            calls.append(1)
            raise RuntimeError("inductor: no C++ compiler")

    monkeypatch.setattr(torch, "compile", lambda module, **kw: Broken(module))
    logger = logging.getLogger("sthinge")
    logger.addHandler(caplog.handler)
    try:
        got = st.tl.predict(sdata, model, n_steps=3, n_samples=2, sections="S3", seed=5, inplace=False, compile=True)
    finally:
        logger.removeHandler(caplog.handler)
    want = st.tl.predict(sdata, model, n_steps=3, n_samples=2, sections="S3", seed=5, inplace=False)
    assert calls == [1]
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.layers[f"{K.PRED_KEY}{K.STD_SUFFIX}"], want.layers[f"{K.PRED_KEY}{K.STD_SUFFIX}"])
    assert not got.uns[K.PRED_KEY]["compiled"]
    assert _warnings(caplog.records, "continuing without torch.compile")


def test_predict_compile_uses_the_compiled_model(trained, monkeypatch):
    import torch

    sdata, model = trained
    used = []

    def fake_compile(module, **kw):
        assert kw.get("dynamic") is True

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = module
                self.config, self.n_genes = module.config, module.n_genes

            def forward(self, *args, **kwargs):
                used.append(args[0].shape[0])
                return self.inner(*args, **kwargs)

        return Wrapped()

    monkeypatch.setattr(torch, "compile", fake_compile)
    got = st.tl.predict(sdata, model, n_steps=3, sections="S3", seed=5, inplace=False, compile=True)
    want = st.tl.predict(sdata, model, n_steps=3, sections="S3", seed=5, inplace=False)
    assert used and set(used) == {64}  # every model call went through the compiled module (64 spots of S3)
    np.testing.assert_array_equal(got.X, want.X)
    assert bool(got.uns[K.PRED_KEY]["compiled"]) is True


def test_predict_compile_must_be_bool(trained):
    sdata, model = trained
    with pytest.raises(TypeError, match="`compile`"):
        st.tl.predict(sdata, model, n_steps=2, inplace=False, compile="yes")


def test_predict_into_a_store_equals_in_memory(trained, tmp_path, monkeypatch):
    """``store=``: the arrays are written chunk by chunk (several chunks here) into a zarr folder in anndata's
    format; the table in ``data`` reads them lazily and equals the in-memory prediction exactly."""
    import anndata as ad
    import dask.array as da

    from sthinge.tl import _predict

    monkeypatch.setattr(_predict, "_CHUNK", 50)  # 192 spots: 4 chunks, the last one partial
    sdata, model = trained
    kw = dict(n_steps=3, n_samples=3, seed=7, levels=(0.5, 0.9), return_samples=True)
    ref = st.tl.predict(sdata, model, inplace=False, **kw)
    store = tmp_path / "pred.zarr"
    st.tl.predict(sdata, model, key_added="backed", store=store, **kw)
    table = sdata.tables["backed"]
    assert isinstance(table.X, da.Array) and all(isinstance(v, da.Array) for v in table.layers.values())
    np.testing.assert_array_equal(np.asarray(table.X), ref.X)
    assert set(table.layers) == {k.replace(K.PRED_KEY, "backed", 1) for k in ref.layers}
    for name in ref.layers:
        np.testing.assert_array_equal(np.asarray(table.layers[name.replace(K.PRED_KEY, "backed", 1)]), ref.layers[name])
    np.testing.assert_array_equal(np.asarray(table.obsm["backed_samples"]), ref.obsm["sthinge_samples"])
    assert table.uns["backed"]["n_samples"] == 3 and table.uns["backed"]["intervals"] == ref.uns["sthinge"]["intervals"]
    assert list(table.obs_names) == list(ref.obs_names)
    np.testing.assert_array_equal(table.obsm["spatial"], ref.obsm["spatial"])
    # the folder is a plain anndata zarr store, no temporary folder is left beside it
    disk = ad.read_zarr(store)
    np.testing.assert_array_equal(disk.X, ref.X)
    assert disk.uns["backed"]["seed"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["pred.zarr"]
    # the chunks are the sampler's
    import zarr

    assert zarr.open_group(str(store), mode="r")["X"].chunks == (50, model.n_genes)


def test_predict_store_is_never_replaced_silently(trained, tmp_path):
    sdata, model = trained
    store = tmp_path / "pred.zarr"
    store.mkdir()
    (store / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="`store`.*not empty.*overwrite=True"):
        st.tl.predict(sdata, model, key_added="s1", store=store, n_steps=2)
    assert "s1" not in sdata.tables and (store / "mine.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="`store` with AnnData `data` needs `inplace=False`"):
        st.tl.predict(sdata.tables[K.TABLE_KEY].copy(), model, store=tmp_path / "a.zarr", n_steps=2)
    assert not (tmp_path / "a.zarr").exists()
    pred = st.tl.predict(sdata.tables[K.TABLE_KEY].copy(), model, store=tmp_path / "a.zarr", n_steps=2, inplace=False)
    assert pred.n_obs == sdata.tables[K.TABLE_KEY].n_obs and (tmp_path / "a.zarr").is_dir()
