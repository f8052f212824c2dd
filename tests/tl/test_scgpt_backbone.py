"""HINGE on scGPT through the user-facing functions: `fit` on a preset and on a checkpoint folder, `predict`, save and
load (also with a moved backbone), `pretrain_backbone` building an scGPT-shaped stand-in, and `select_genes`
reporting the panel genes outside an scGPT vocabulary."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

import sthinge as st
from sthinge import _constants as K
from sthinge.models import HingeScGPT, ScGPT
from sthinge.models.scgpt import SPECIAL_TOKENS

EMB = "X_factors"
pytestmark = pytest.mark.usefixtures("one_thread")


def _prepare(vocab="cellfm-80m", n_top=20):
    sdata = st.datasets.synthetic(n_sections=3, n_spots=64, n_genes=24, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=n_top, vocab=vocab)
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(0)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 4))].astype(np.float32)
    return sdata


def _checkpoint(tmp_path, genes, name="scg", seed=1, **overrides):
    """An scGPT checkpoint folder in the published layout, random weights, over ``genes`` (+ special tokens)."""
    n = len(genes)
    torch.manual_seed(seed)
    net = ScGPT.from_preset("tiny", vocab_size=n + 3, pad_token_id=n, **overrides)
    net.vocab = {**{g: i for i, g in enumerate(genes)}, **{t: n + i for i, t in enumerate(SPECIAL_TOKENS)}}
    return st.io.save_scgpt(net, tmp_path / name)


@pytest.fixture(scope="module")
def folder_and_data(tmp_path_factory):
    sdata = _prepare(vocab=None)
    genes = [f"OTHER{i}" for i in range(5)] + list(sdata.tables[K.TABLE_KEY].var_names)
    folder = _checkpoint(tmp_path_factory.mktemp("scgpt"), genes)
    sdata = _prepare(vocab=folder)
    return folder, sdata


def _fit(sdata, tiny_fit_kw, **kw):
    return st.tl.fit(sdata, **{**tiny_fit_kw, "embedding_key": EMB, "train_sections": ["S1", "S2"], **kw})


def test_fit_on_an_scgpt_folder_predicts_and_round_trips(folder_and_data, tiny_fit_kw, tmp_path):
    folder, sdata = folder_and_data
    model = _fit(sdata, tiny_fit_kw, backbone=folder)
    assert isinstance(model.module, HingeScGPT)
    assert model.backbone_source["kind"] == "file" and model.backbone_source["path"] == str(folder.resolve())
    backbone_weights = {k: v.clone() for k, v in model.module.backbone.state_dict().items()}
    reference, _ = st.io.load_scgpt(folder)
    for k, v in reference.state_dict().items():  # the frozen backbone did not move in training
        torch.testing.assert_close(backbone_weights[k], v, rtol=0, atol=0)
    vocab = json.loads((folder / "vocab.json").read_text())
    symbols = model.symbols
    assert model.module.gg.tolist() == [vocab[s] for s in symbols]
    a = st.tl.predict(sdata, model, n_steps=2, n_samples=2, sections="S3", seed=3, inplace=False)
    assert a.n_obs == 64 and np.isfinite(a.X).all()
    # saved without the backbone's weights (only a reference to its folder and its sha256)
    path = model.save(tmp_path / "model")
    payload = torch.load(path / "model.pt", weights_only=True)
    assert payload["backbone_kind"] == "scgpt"
    assert not any(k.startswith("backbone.") for k in payload["state_dict"])
    b = st.tl.predict(sdata, st.tl.HingeModel.load(path), n_steps=2, n_samples=2, sections="S3", seed=3, inplace=False)
    np.testing.assert_array_equal(a.X, b.X)
    # the backbone folder moved: found through `backbone=`; another backbone's folder is refused by its sha256
    moved = shutil.copytree(folder, tmp_path / "moved")
    c = st.tl.predict(
        sdata, st.tl.HingeModel.load(path, backbone=moved), n_steps=2, n_samples=2, sections="S3", seed=3, inplace=False
    )
    np.testing.assert_array_equal(a.X, c.X)
    other = _checkpoint(tmp_path, list(vocab)[:-3], name="other", seed=2)
    with pytest.raises(ValueError, match="it is not the same backbone"):
        st.tl.HingeModel.load(path, backbone=other)


def test_fit_on_an_scgpt_preset_without_weights_stores_the_backbone(tiny_fit_kw, tmp_path):
    sdata = _prepare()
    model = _fit(sdata, tiny_fit_kw, backbone="scgpt-tiny")
    assert isinstance(model.module, HingeScGPT) and model.backbone_source.get("random") is True
    path = model.save(tmp_path / "model")
    loaded = st.tl.HingeModel.load(path)  # the random backbone's weights travel in the file
    a = st.tl.predict(sdata, model, n_steps=2, n_samples=2, sections="S3", seed=1, inplace=False)
    b = st.tl.predict(sdata, loaded, n_steps=2, n_samples=2, sections="S3", seed=1, inplace=False)
    np.testing.assert_array_equal(a.X, b.X)


def test_scgpt_weights_of_another_shape_than_the_preset_are_refused(folder_and_data, tiny_fit_kw):
    folder, sdata = folder_and_data
    with pytest.raises(ValueError, match=r"holds an scGPT of shape .* not the shape of `backbone` 'scgpt-whole-human'"):
        _fit(sdata, tiny_fit_kw, backbone="scgpt-whole-human", weights=folder)


def test_scgpt_refuses_variants_it_does_not_implement(folder_and_data, tiny_fit_kw):
    folder, sdata = folder_and_data
    with pytest.raises(ValueError, match="supports the variants 'hinge' and 'nosoftnorm'"):
        _fit(sdata, tiny_fit_kw, backbone=folder, config={"variant": "scratch"})


def test_select_genes_reports_genes_outside_the_scgpt_vocabulary(tmp_path, sthinge_log):
    sdata = _prepare(vocab=None)
    table = sdata.tables[K.TABLE_KEY]
    inside = list(table.var_names[:10])
    folder = _checkpoint(tmp_path, inside)
    st.pp.select_genes(sdata, genes=list(table.var_names[:14]), vocab=folder)
    panel = table.uns[K.GENES_KEY]["genes"]
    assert sorted(panel) == sorted(inside)
    assert any(
        "4 gene(s) of `genes` are not in the scgpt (scg, 10 genes) vocabulary" in r.message for r in sthinge_log.records
    )
    # its vocab.json names the same vocabulary
    st.pp.select_genes(sdata, genes=list(table.var_names[:14]), vocab=folder / "vocab.json")
    assert sorted(table.uns[K.GENES_KEY]["genes"]) == sorted(inside)


def test_fit_names_panel_genes_outside_the_scgpt_vocabulary(tmp_path, tiny_fit_kw):
    sdata = _prepare(vocab=None)
    folder = _checkpoint(tmp_path, list(sdata.tables[K.TABLE_KEY].var_names[:3]))
    with pytest.raises(
        KeyError, match=r"outside the vocabulary of the backbone .* not in the 6-token scGPT vocabulary"
    ):
        _fit(sdata, tiny_fit_kw, backbone=folder)


def test_pretrain_backbone_builds_an_scgpt_stand_in(tmp_path, tiny_fit_kw):
    sdata = _prepare()
    net = st.tl.pretrain_backbone(sdata, preset="scgpt-tiny", max_epochs=3, lr=3e-3, save=tmp_path / "standin")
    assert isinstance(net, ScGPT) and net.sthinge_path == tmp_path / "standin"
    assert (tmp_path / "standin" / "best_model.pt").is_file() and (tmp_path / "standin.json").is_file()
    info = net.sthinge_pretrain
    assert info["final_val_loss"] < info["initial_val_loss"]
    assert net.config.vocab_size == 27855 + 3 and net.vocab["<cls>"] == 27856
    model = _fit(sdata, tiny_fit_kw, backbone=tmp_path / "standin")
    assert isinstance(model.module, HingeScGPT)
    loaded, _ = st.io.load_scgpt(tmp_path / "standin")
    for k, v in loaded.state_dict().items():
        torch.testing.assert_close(model.module.backbone.state_dict()[k], v, rtol=0, atol=0)
