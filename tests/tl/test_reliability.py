"""Reliability of training and prediction: safe loading, atomic writes, reproducibility, exact resume, the NaN
guard and the out-of-memory fallback of ``predict`` (tiny synthetic data, CPU, seconds)."""

from __future__ import annotations

import logging
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sthinge as st  # noqa: E402
from sthinge import _constants as K  # noqa: E402
from sthinge.io import load_cellfm, safe_torch_load, save_cellfm  # noqa: E402
from sthinge.tl import HingeModel  # noqa: E402

EMB = "X_test"
# 2 sections x 36 spots x 30 genes: 65 training spots, 4 batches of 16 per epoch. In 4 epochs the LR halves after
# the interruption point (epoch 2) and the validation loss is best at epoch 1, then worse (no early stop with
# patience 3): the returned weights are the best ones kept by the early-stopping state, from before the interruption
# (with the official code's loss, the paper's point decoder and SoftAdaLN alone, whose validation curve gives that
# shape here)
FIT = dict(
    config={"likelihood": "point", "modulation": "paper"},
    backbone="tiny",
    embedding_key=EMB,
    batch_size=16,
    lr=1e-2,
    min_epochs=0,
    curriculum_epochs=1,
    val_metric="loss",
    milestones=(3,),
    gamma=0.5,
    patience=3,
    seed=0,
    loss_weight="revealed",
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread_quiet():
    threads, verbosity = torch.get_num_threads(), st.settings.verbosity
    torch.set_num_threads(1)
    st.settings.verbosity = 0
    yield
    torch.set_num_threads(threads)
    st.settings.verbosity = verbosity


def _prepare(seed: int = 0):
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=2, n_spots=36, n_genes=30, image=False, seed=seed)
    normalize(sdata)
    select_genes(sdata, n_top=30, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(seed)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 3))].astype(np.float32)
    return sdata


def _state(model_or_module) -> dict:
    module = model_or_module.module if isinstance(model_or_module, HingeModel) else model_or_module
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _assert_states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} tensor(s) differ, e.g. {different[:3]}"


def _assert_nested_equal(a, b, where="") -> None:
    """Exact equality of checkpoint contents (tensors with torch.equal, containers recursively)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            _assert_nested_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_nested_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


class _CreatesFile:
    """Unpickling this calls ``open(target, "w")``: a stand-in for arbitrary code execution."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.fixture(scope="module")
def data(_one_thread_quiet):
    return _prepare()


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    """The reference: 4 epochs in one go, with checkpoints."""
    ckpt = tmp_path_factory.mktemp("full")
    model = st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt)
    return model, ckpt / "last.ckpt"


# ---------------------------------------------------------------------------------------------------------------
# 2. loading never unpickles arbitrary objects
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loader", ["Hinge.from_pretrained", "load_official_hinge", "pp.read_state_dict"])
def test_other_weight_loaders_never_unpickle_objects(loader, tmp_path):
    """The loaders not covered below (``safe_torch_load`` itself: tests/io/test_io_torch.py) refuse a file that
    holds a pickled object, without running it."""
    import pickle

    from sthinge.models import Hinge, load_official_hinge
    from sthinge.pp._encoders import read_state_dict

    marker = tmp_path / "pwned.txt"
    path = tmp_path / "weights.pt"
    torch.save(
        {"model": {"gene_emb": torch.zeros(8, 4)}, "state_dict": {}, "config": {}, "evil": _CreatesFile(str(marker))},
        path,
    )
    load = {
        "Hinge.from_pretrained": Hinge.from_pretrained,
        "load_official_hinge": load_official_hinge,
        "pp.read_state_dict": read_state_dict,
    }[loader]
    with pytest.raises((ValueError, pickle.UnpicklingError), match="(?i)weights_only|unsupported global"):
        load(path)
    assert not marker.exists()


def test_malicious_model_file_is_refused(tmp_path):
    marker = tmp_path / "pwned.txt"
    folder = tmp_path / "model"
    folder.mkdir()
    payload = {
        "state_dict": {"gg": torch.arange(3)},
        "config": {},
        "backbone_config": {},
        "var_names": ["A"],
        "embedding_key": EMB,
        "evil": _CreatesFile(str(marker)),
    }
    torch.save(payload, folder / "model.pt")
    for path in (folder, folder / "model.pt"):
        with pytest.raises(ValueError, match=r"Refusing to load .*model\.pt.*arbitrary Python objects"):
            HingeModel.load(path)
    assert not marker.exists()


def test_malicious_backbone_file_is_refused(data, tmp_path):
    marker = tmp_path / "pwned.txt"
    torch.save({"gene_emb": torch.zeros(8, 4), "evil": _CreatesFile(str(marker))}, tmp_path / "backbone.pt")
    with pytest.raises(ValueError, match=r"Refusing to load .*backbone\.pt"):
        load_cellfm(tmp_path / "backbone.pt")
    with pytest.raises(ValueError, match=r"Refusing to load .*backbone\.pt"):
        st.tl.fit(data, **FIT | {"backbone": tmp_path / "backbone.pt"}, max_epochs=1)
    assert not marker.exists()


def test_malicious_resume_checkpoint_is_refused(data, tmp_path):
    marker = tmp_path / "pwned.txt"
    (tmp_path / "ckpt").mkdir()
    torch.save(
        {"state_dict": {}, "loops": {}, "optimizer_states": [], "lr_schedulers": [], "evil": _CreatesFile(str(marker))},
        tmp_path / "ckpt" / "last.ckpt",
    )
    with pytest.raises(ValueError, match=r"resume.*Refusing to load .*last\.ckpt"):
        st.tl.fit(data, **FIT, max_epochs=2, checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert not marker.exists()
    # a truncated checkpoint is refused before any training, too
    good = tmp_path / "ok"
    st.tl.fit(data, **FIT, max_epochs=1, checkpoint_dir=good)
    raw = (good / "last.ckpt").read_bytes()
    (good / "last.ckpt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"resume.*last\.ckpt.*truncated"):
        st.tl.fit(data, **FIT, max_epochs=2, checkpoint_dir=good, resume=True)


# ---------------------------------------------------------------------------------------------------------------
# 3. atomic writes
# ---------------------------------------------------------------------------------------------------------------
def _crashing_save(real_save, written: list):
    """A torch.save that writes half of the file it was asked for, then fails like a full disk."""

    def save(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        if hasattr(f, "write"):  # a file object (what sthinge's writers pass) or a path
            f.flush()
            f.truncate(f.tell() // 2)
            written.append(Path(f.name))
        else:
            raw = Path(f).read_bytes()
            Path(f).write_bytes(raw[: len(raw) // 2])
            written.append(Path(f))
        raise OSError(28, "No space left on device")

    return save


def test_model_save_crash_keeps_previous_model(uninterrupted, tmp_path, monkeypatch):
    model, _ = uninterrupted
    target = model.save(tmp_path / "model")
    before = (target / "model.pt").read_bytes()
    written: list[Path] = []
    monkeypatch.setattr(torch, "save", _crashing_save(torch.save, written))
    with pytest.raises(OSError, match="No space"):
        model.save(target, overwrite=True)
    monkeypatch.undo()
    assert written and all(p != target / "model.pt" and not p.exists() for p in written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no temporary folder left behind
    assert sorted(p.name for p in target.iterdir()) == ["model.pt"]
    assert (target / "model.pt").read_bytes() == before
    _assert_states_equal(_state(HingeModel.load(target)), _state(model))


def test_cellfm_save_crash_keeps_previous_file(tmp_path, monkeypatch):
    from sthinge.models import CellFM

    torch.manual_seed(0)
    net = CellFM.from_preset("tiny")
    path = save_cellfm(net, tmp_path / "backbone.pt")
    before = path.read_bytes()
    other = CellFM.from_preset("tiny")
    written: list[Path] = []
    monkeypatch.setattr(torch, "save", _crashing_save(torch.save, written))
    with pytest.raises(OSError, match="No space"):
        save_cellfm(other, path, overwrite=True)
    monkeypatch.undo()
    assert written and all(p != path and not p.exists() for p in written)
    assert [p.name for p in tmp_path.iterdir()] == ["backbone.pt"]
    assert path.read_bytes() == before
    _assert_states_equal(_state(load_cellfm(path)), _state(net))


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(data, two_epochs, tmp_path, monkeypatch):
    reference, _ = two_epochs
    ckpt = tmp_path / "ckpt"
    real = torch.save
    written: list[Path] = []
    crash = _crashing_save(real, written)

    def third_save_crashes(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "sthinge_rng" in obj and len(obj["sthinge_history"]) == 3:
            return crash(obj, f, *args, **kwargs)  # the checkpoint of the third epoch
        return real(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", third_save_crashes)
    with pytest.raises(OSError, match="No space"):
        st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt)
    monkeypatch.undo()
    assert written and all(p.parent == ckpt and p != ckpt / "last.ckpt" for p in written)
    assert [p.name for p in ckpt.iterdir()] == ["last.ckpt"]  # no temporary file left behind
    _check_kept(ckpt / "last.ckpt", reference)


# ---------------------------------------------------------------------------------------------------------------
# 4. reproducibility and exact resume
# ---------------------------------------------------------------------------------------------------------------
def test_same_seed_same_weights_and_predictions(data, uninterrupted):
    model, _ = uninterrupted
    again = st.tl.fit(data, **FIT, max_epochs=4)
    _assert_states_equal(_state(again), _state(model))  # every tensor, trainable ones included
    assert again.history == model.history
    trainable = [n for n, p in again.module.named_parameters() if p.requires_grad]
    assert len(trainable) > 10
    other = st.tl.fit(data, **{**FIT, "seed": 6}, max_epochs=4)
    assert any(not torch.equal(_state(other)[n], _state(model)[n]) for n in trainable)

    a = st.tl.predict(data, model, n_steps=4, n_samples=2, seed=3, inplace=False)
    b = st.tl.predict(data, again, n_steps=4, n_samples=2, seed=3, inplace=False)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.layers["sthinge_std"], b.layers["sthinge_std"])
    c = st.tl.predict(data, model, n_steps=4, n_samples=2, seed=4, inplace=False)
    assert not np.array_equal(a.X, c.X)


def test_checkpoint_carries_full_training_state(uninterrupted):
    _, last = uninterrupted
    ckpt = safe_torch_load(last)  # weights_only=True
    assert ckpt["epoch"] == 3 and len(ckpt["sthinge_history"]) == 4
    vals = [h["val"] for h in ckpt["sthinge_history"]]
    assert int(np.argmin(vals)) == 1 and vals[2] > vals[1] and vals[3] > vals[1]  # the set-up the tests rely on
    assert ckpt["optimizer_states"][0]["state"], "no AdamW moments in the checkpoint"
    assert ckpt["lr_schedulers"][0]["last_epoch"] == 4
    stop = ckpt["callbacks"]["BestAndEarlyStop"]
    assert set(stop) == {"best", "best_epoch", "bad", "best_state"} and stop["best_state"]
    assert stop["best_epoch"] == 1 and stop["bad"] == 2 and stop["best"] == vals[1]
    rng = ckpt["sthinge_rng"]
    assert {"torch", "numpy", "python", "loader"} <= set(rng)
    # the frozen backbone is not in it
    assert not any(".attn." in k and "adaln" not in k for k in ckpt["state_dict"] if k.startswith("module.retention"))


def test_resume_after_max_epochs_is_exact(data, uninterrupted, tmp_path):
    model, last_full = uninterrupted
    ckpt = tmp_path / "ckpt"
    st.tl.fit(data, **FIT, max_epochs=2, checkpoint_dir=ckpt)
    resumed = st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt, resume=True)
    assert resumed.history == model.history
    lrs = [h["lr"] for h in model.history]
    assert lrs[0] == lrs[1] and lrs[-1] < lrs[0]  # the LR milestone lies after the interruption
    _assert_states_equal(_state(resumed), _state(model))
    _assert_same_checkpoint(last_full, ckpt / "last.ckpt")


def _assert_same_checkpoint(a: Path, b: Path) -> None:
    """The state to continue from is the same too (weights, optimizer, scheduler, early stopping, generators)."""
    a, b = safe_torch_load(a), safe_torch_load(b)
    for key in (
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "callbacks",
        "sthinge_rng",
        "sthinge_history",
        "loops",
    ):
        _assert_nested_equal(a[key], b[key], key)


def test_resume_after_keyboard_interrupt_is_exact(data, uninterrupted, tmp_path, monkeypatch):
    from sthinge.tl._train import HingeLightning

    model, last_full = uninterrupted
    cls = HingeLightning
    step = cls.training_step

    def interrupted_step(self, batch, batch_idx):
        if self.current_epoch == 2 and batch_idx == 1:  # Ctrl-C in the middle of the third epoch
            raise KeyboardInterrupt
        return step(self, batch, batch_idx)

    ckpt = tmp_path / "ckpt"
    handler = signal.getsignal(signal.SIGINT)
    monkeypatch.setattr(cls, "training_step", interrupted_step)
    with pytest.raises(KeyboardInterrupt, match=r"interrupted.*end of epoch 1.*last\.ckpt.*resume=True"):
        st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt)
    monkeypatch.undo()
    assert signal.getsignal(signal.SIGINT) is handler  # Lightning had switched Ctrl-C off
    assert len(safe_torch_load(ckpt / "last.ckpt")["sthinge_history"]) == 2
    resumed = st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt, resume=True)
    assert resumed.history == model.history
    _assert_states_equal(_state(resumed), _state(model))
    _assert_same_checkpoint(last_full, ckpt / "last.ckpt")


def test_resume_of_a_finished_fit_changes_nothing(data, uninterrupted, tmp_path):
    model, last_full = uninterrupted
    shutil.copytree(last_full.parent, tmp_path / "ckpt")
    again = st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=tmp_path / "ckpt", resume=True)
    assert again.history == model.history
    _assert_states_equal(_state(again), _state(model))


# ---------------------------------------------------------------------------------------------------------------
# 5. NaN guard
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_epochs(data, tmp_path_factory):
    """The state after 2 good epochs (what a run that diverges in its third epoch must keep)."""
    ckpt = tmp_path_factory.mktemp("two")
    st.tl.fit(data, **FIT, max_epochs=2, checkpoint_dir=ckpt)
    state = safe_torch_load(ckpt / "last.ckpt")
    return state, state["global_step"] // 2  # optimizer steps per epoch


def _check_kept(last: Path, reference: dict) -> None:
    kept = safe_torch_load(last)
    assert kept["epoch"] == 1
    assert all(bool(torch.isfinite(v).all()) for v in kept["state_dict"].values() if v.is_floating_point())
    _assert_nested_equal(kept["state_dict"], reference["state_dict"], "state_dict")
    _assert_nested_equal(kept["optimizer_states"], reference["optimizer_states"], "optimizer_states")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data, two_epochs, tmp_path, monkeypatch):
    from sthinge.models.hinge import Hinge

    reference, steps_per_epoch = two_epochs
    forward = Hinge.forward
    calls = {"train": 0}

    def diverging(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        if self.training:
            calls["train"] += 1
            if calls["train"] > 2 * steps_per_epoch + 1:  # from the second batch of the third epoch on
                out = out * float("nan")
        return out

    monkeypatch.setattr(Hinge, "forward", diverging)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2, batch 1") as info:
        st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt)
    assert str(ckpt / "last.ckpt") in str(info.value) and "end of epoch 1" in str(info.value)
    _check_kept(ckpt / "last.ckpt", reference)


def test_nan_weights_at_epoch_end_are_not_checkpointed(data, two_epochs, tmp_path, monkeypatch):
    """A finite loss but weights that turned NaN in the last step of an epoch: that epoch is not saved."""
    from sthinge.tl._train import HingeLightning

    reference, steps_per_epoch = two_epochs
    cls = HingeLightning

    def poison(self, outputs, batch, batch_idx):
        if self.global_step == 3 * steps_per_epoch:  # after the last optimizer step of the third epoch
            with torch.no_grad():
                next(p for p in self.module.parameters() if p.requires_grad).fill_(float("nan"))

    monkeypatch.setattr(cls, "on_train_batch_end", poison, raising=False)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(FloatingPointError, match=r"became NaN or infinite during epoch 2") as info:
        st.tl.fit(data, **FIT, max_epochs=4, checkpoint_dir=ckpt)
    assert str(ckpt / "last.ckpt") in str(info.value)
    _check_kept(ckpt / "last.ckpt", reference)


def test_nan_without_checkpoint_dir_says_how_to_keep_weights(data, monkeypatch):
    from sthinge.models.hinge import Hinge

    forward = Hinge.forward
    monkeypatch.setattr(Hinge, "forward", lambda self, *a, **k: forward(self, *a, **k) * float("nan"))
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 0, batch 0.*checkpoint_dir"):
        st.tl.fit(data, **FIT, max_epochs=2)


# ---------------------------------------------------------------------------------------------------------------
# 6. GPU out of memory in predict
# ---------------------------------------------------------------------------------------------------------------
def test_predict_halves_the_batch_on_oom(data, uninterrupted, monkeypatch, caplog):
    import sthinge.models
    import sthinge.tl._predict as P

    model, _ = uninterrupted
    monkeypatch.setattr(P, "_CHUNK", 30)  # 72 spots: 3 chunks, so the halved size must carry over
    real = sthinge.models.sample
    seen: list[int] = []

    def small_gpu(module, cond, *, batch_size, **kwargs):
        seen.append(batch_size)
        if batch_size > 16:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(module, cond, batch_size=batch_size, **kwargs)

    kw = dict(n_steps=4, n_samples=2, seed=11, inplace=False)
    logger = logging.getLogger("sthinge")
    logger.addHandler(caplog.handler)
    monkeypatch.setattr(st.settings, "verbosity", 1)  # the warnings are logged
    try:
        monkeypatch.setattr(sthinge.models, "sample", small_gpu)
        got = P.predict(data, model, batch_size=64, **kw)
        monkeypatch.setattr(sthinge.models, "sample", real)
        want = P.predict(data, model, batch_size=16, **kw)
    finally:
        logger.removeHandler(caplog.handler)
    assert seen == [64, 32, 16, 16, 16]
    np.testing.assert_array_equal(got.X, want.X)
    np.testing.assert_array_equal(got.layers["sthinge_std"], want.layers["sthinge_std"])
    messages = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert messages == [
        "GPU out of memory in predict: continuing with batch_size=32.",
        "GPU out of memory in predict: continuing with batch_size=16.",
    ]


def test_predict_oom_at_batch_one_is_raised(data, uninterrupted, monkeypatch):
    import sthinge.models

    model, _ = uninterrupted

    def no_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(sthinge.models, "sample", no_memory)
    adata = data.tables[K.TABLE_KEY].copy()
    with pytest.raises(torch.cuda.OutOfMemoryError):
        st.tl.predict(adata, model, n_steps=2, batch_size=4)
    assert K.PRED_KEY not in adata.obsm
