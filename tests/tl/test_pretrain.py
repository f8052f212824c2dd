"""``tl.pretrain_backbone``: masked value modelling of a CellFM backbone on expression-only data (tiny, CPU)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import sthinge as st
from sthinge import _constants as K
from sthinge.tl._corpus import _batch_tensors, _build_corpus, _tokens, _var_to_vocab
from sthinge.tl._corpus import masked_loss as _loss
from sthinge.tl._pretrain import pretrain_backbone

EMB = "X_factors"
TINY = dict(preset="tiny", batch_size=32, lr=3e-3)


def _table(seed: int = 0, n_sections: int = 2, n_spots: int = 64, n_genes: int = 24):
    return st.datasets.synthetic(
        n_sections=n_sections, n_spots=n_spots, n_genes=n_genes, image=False, seed=seed
    ).tables[K.TABLE_KEY]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one torch thread (tests/conftest.py)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, quiet):
    """A tiny backbone pre-trained for 3 epochs on the panel of a prepared synthetic SpatialData."""
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=3, n_spots=64, n_genes=24, seed=0)
    normalize(sdata)
    select_genes(sdata, n_top=24, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(0)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 4))].astype(np.float32)
    path = tmp_path_factory.mktemp("backbone") / "tiny.pt"
    net = pretrain_backbone(sdata, max_epochs=3, val_fraction=0.25, save=path, **TINY)
    return sdata, net, path


def test_loss_drops(pretrained):
    _, net, _ = pretrained
    info = net.sthinge_pretrain
    history = info["history"]
    assert len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # the validation loss uses the same masks every time: the learning is real, not a lucky draw
    assert history[-1]["val_loss"] < 0.5 * info["initial_val_loss"]
    assert info["final_val_loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-5)
    assert info["n_val"] > 0 and info["n_train"] + info["n_val"] == info["n_spots"] == 192


def test_checkpoint_reloads_bit_identically(pretrained):
    from sthinge.io import load_cellfm

    sdata, net, path = pretrained
    assert net.sthinge_path == path and path.is_file()
    loaded = load_cellfm(path)  # no arguments: heads and sizes come from the file
    assert loaded.config == net.config
    a, b = net.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # CellFM key names, as real weights
    assert "gene_emb" in a and "encoder.1.attn.q_proj.weight" in a and "value_dec.w2.weight" in a
    genes = net.sthinge_pretrain["genes"]
    assert genes == list(sdata.tables[K.TABLE_KEY].uns[K.GENES_KEY]["genes"])  # default panel: the pp.select_genes one
    ids = torch.as_tensor(st._vocab.cellfm_gene_ids(genes), dtype=torch.long).expand(4, -1)
    values = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) * 3
    pad = torch.zeros(ids.shape, dtype=torch.bool)
    vis = torch.ones(ids.shape)
    with torch.no_grad():
        out_a, cls_a = net(ids, values, vis, pad)
        out_b, cls_b = loaded(ids, values, vis, pad)
    assert torch.equal(out_a, out_b) and torch.equal(cls_a, cls_b)
    side = json.loads(path.with_name(path.name + ".json").read_text())
    assert side["genes"] == genes and side["history"] == net.sthinge_pretrain["history"]


def test_fit_accepts_the_checkpoint(pretrained):
    from sthinge.tl._fit import fit

    sdata, net, path = pretrained
    model = fit(
        sdata,
        backbone=path,
        embedding_key=EMB,
        train_sections=["S1", "S2"],
        max_epochs=1,
        batch_size=32,
        min_epochs=0,
        curriculum_epochs=1,
        val_metric="loss",
    )
    assert len(model.history) == 1 and np.isfinite(model.history[0]["train_loss"])
    backbone = {k: v for k, v in model.module.state_dict().items() if k == "gene_emb"}
    assert torch.equal(backbone["gene_emb"], net.gene_emb.detach())  # the pre-trained (frozen) table is used
    assert model.backbone_source["kind"] == "file"


def test_ckpt_format_and_default_cache_path(tmp_path):
    from sthinge.io import load_cellfm

    config = dataclasses.replace(
        st.models.CellFMConfig.from_preset("tiny", n_layers=2, d_model=32, n_heads=4), name="t32"
    )
    net = pretrain_backbone(_table(), preset=config, max_steps=1, val_fraction=0.0, format="ckpt", batch_size=64)
    path = net.sthinge_path
    assert path.parent == st.settings.cachedir / "backbones" and path.name.startswith("t32-")
    assert path.suffix == ".ckpt" and net.sthinge_pretrain["initial_val_loss"] is None
    loaded = load_cellfm(path)
    assert loaded.config == net.config
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())


def _two_sections_with_missing_genes():
    """Two sections; S2 did not measure the first 6 genes (var["sections"]), whose S2 values are garbage."""
    table = _table(n_sections=2, n_spots=36, n_genes=20)
    table.layers["lognorm"] = np.log1p(table.X.toarray().astype(np.float32))
    sections = np.array(["S1,S2"] * table.n_vars, dtype=object)
    sections[:6] = "S1"
    table.var[K.VAR_SECTIONS] = sections
    return table


def _train(table, seed=0):
    net = pretrain_backbone(
        table,
        layer="lognorm",
        max_epochs=1,
        val_fraction=0.0,
        seed=seed,
        save=st.settings.cachedir / f"m{np.random.default_rng().integers(1 << 30)}.pt",
        **TINY,
    )
    return net.state_dict()


def test_missing_genes_are_out_of_inputs_and_loss():
    table = _two_sections_with_missing_genes()
    s2 = (table.obs[K.SECTION_KEY] == "S2").to_numpy()
    vocab = st._vocab.cellfm_vocab()
    maps = [_var_to_vocab(table, vocab)]
    panel = [table.var_names[i] for i in range(table.n_vars)]  # synthetic symbols are in the vocabulary
    panel = sorted(panel, key=list(vocab).index)
    corpus = _build_corpus(
        [table], panel, maps, st._vocab.cellfm_gene_ids(panel), "lognorm", K.SECTION_KEY, K.VAR_SECTIONS
    )
    cols = [panel.index(g) for g in table.var_names[:6]]
    groups = corpus.present[corpus.group]
    assert not groups[s2][:, cols].any() and groups[~s2].all()
    assert groups[s2].sum(1).min() == table.n_vars - 6

    # the loss ignores whatever a missing gene's value is, as long as it is flagged missing (a pad token)
    net = st.models.CellFM.from_preset("tiny").eval()  # no dropout
    ids = torch.as_tensor(corpus.gene_ids)
    values, missing = _batch_tensors(corpus, np.flatnonzero(s2)[:8])
    assert missing[:, cols].all() and missing.sum() == 8 * 6
    garbage = values.clone()
    garbage[missing] = torch.rand(int(missing.sum()), generator=torch.Generator().manual_seed(1)) * 8

    def loss(v, m):
        return _loss(net, ids, v, m, n_tokens=None, mask_ratio=0.2, generator=torch.Generator().manual_seed(0))

    with torch.no_grad():
        assert torch.equal(loss(values, missing), loss(garbage, missing))
        unflagged = torch.zeros_like(missing)  # as zeros instead of missing: the values now matter
        assert not torch.equal(loss(values, unflagged), loss(garbage, unflagged))

    base = _train(table)
    changed = table.copy()
    rng = np.random.default_rng(1)
    changed.layers["lognorm"][np.ix_(s2, np.arange(6))] = rng.uniform(0, 8, size=(s2.sum(), 6))
    same = _train(changed)
    for k in base:
        assert torch.equal(base[k], same[k]), k  # deterministic, and the unmeasured values never mattered
    # the same change on genes that S2 did measure does change the training
    measured = table.copy()
    measured.layers["lognorm"][np.ix_(s2, np.arange(6, 12))] = rng.uniform(0, 8, size=(s2.sum(), 6))
    other = _train(measured)
    assert not torch.equal(base["value_dec.w2.weight"], other["value_dec.w2.weight"])
    # and another seed gives other weights
    assert not torch.equal(base["gene_emb"], _train(table, seed=1)["gene_emb"])


def test_tables_with_different_genes_and_token_draws():
    a = _table(seed=0, n_genes=12)
    b = _table(seed=3, n_genes=12)
    vocab = st._vocab.cellfm_vocab()
    maps = [_var_to_vocab(t, vocab) for t in (a, b)]
    panel = sorted(set(a.var_names) | set(b.var_names), key=list(vocab).index)
    corpus = _build_corpus([a, b], panel, maps, st._vocab.cellfm_gene_ids(panel), None, K.SECTION_KEY, K.VAR_SECTIONS)
    in_a = np.isin(panel, a.var_names)
    np.testing.assert_array_equal(corpus.present[corpus.group[0]], in_a)
    np.testing.assert_array_equal(corpus.present[corpus.group[-1]], np.isin(panel, b.var_names))
    assert corpus.values[: a.n_obs][:, ~in_a].nnz == 0  # absent genes hold no values
    # n_tokens draws measured genes first, in panel order, with matching ids and values
    values = torch.arange(12.0).repeat(3, 1)
    missing = torch.zeros(3, 12, dtype=torch.bool)
    missing[:, :4] = True
    ids = torch.arange(1, 13)
    tok_ids, tok_vals, tok_pad = _tokens(ids, values, missing, 6, torch.Generator().manual_seed(0))
    assert tok_ids.shape == (3, 6) and not tok_pad.any()
    assert (tok_ids >= 5).all() and (tok_ids.diff(dim=1) > 0).all()
    assert torch.equal(tok_vals, (tok_ids - 1).float())


def test_pretrain_on_several_anndata_with_token_draws():
    a, b = _table(seed=0, n_genes=16), _table(seed=4, n_genes=16)
    net = pretrain_backbone([a, b], n_tokens=8, max_steps=2, val_fraction=0.1, **TINY)
    genes = net.sthinge_pretrain["genes"]
    assert set(genes) == set(a.var_names) | set(b.var_names)
    assert net.sthinge_pretrain["settings"]["n_tokens"] == 8
    info = net.sthinge_pretrain
    assert np.isfinite(info["final_val_loss"]) and info["final_val_loss"] != info["initial_val_loss"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"preset": "huge"}, ValueError, "Unknown `preset`"),
        ({"preset": 3}, TypeError, "`preset`"),
        ({"preset": "cellfm-80m"}, ValueError, "read-depth"),
        ({"genes": ["NOT_A_GENE_1", "GAPDH"]}, ValueError, "not in the 27855-gene CellFM vocabulary"),
        ({"vocab": "cellfm-1b"}, ValueError, "Unknown CellFM vocabulary"),
        ({"mask_ratio": 0.0}, ValueError, "mask_ratio"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"format": "onnx"}, ValueError, "format"),
        ({"layer": "counts"}, ValueError, "raw integer counts"),
        ({"layer": "nope"}, KeyError, "not found"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    table = _table(n_spots=16, n_genes=8)
    table.layers["counts"] = table.X.copy()
    with pytest.raises(error, match=match):
        pretrain_backbone(table, **{**TINY, **kwargs})
    assert not (st.settings.cachedir / "backbones").exists()  # nothing written


def test_bad_data():
    with pytest.raises(ValueError, match="empty list"):
        pretrain_backbone([])
    with pytest.raises(TypeError, match="AnnData or a SpatialData"):
        pretrain_backbone(np.zeros((3, 3)))
    table = _table(n_spots=16, n_genes=8)
    with pytest.raises(ValueError, match="no spots"):
        pretrain_backbone(table[:0].copy())
    normalised = table.copy()
    normalised.X = np.log1p(normalised.X.toarray()) + 0.5  # normalised values in X, no pp.normalize layer
    with pytest.raises(ValueError, match="not raw counts"):
        pretrain_backbone(normalised)
    config = st.models.CellFMConfig.from_preset("tiny", vocab_size=24078)
    with pytest.raises(ValueError, match="vocab_size"):
        pretrain_backbone(table, preset=config)
    other = table.copy()
    other.var_names = [f"X{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="No gene of `data` is in the CellFM vocabulary"):
        pretrain_backbone(other)


def test_default_backbone_reuses_cache(monkeypatch, tmp_path):
    from sthinge.tl import _backbone as _pretrain

    calls = []
    monkeypatch.setattr(_pretrain, "pretrain_her2st", lambda **kw: calls.append(kw))
    path = _pretrain.default_backbone_path()
    assert path.parent == st.settings.cachedir / "backbones" and path.suffix == ".pt"
    assert _pretrain.default_backbone() == path and calls == [{"save": path, "overwrite": True}]  # absent: built
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    assert _pretrain.default_backbone() == path and len(calls) == 1  # present: reused
    assert _pretrain.default_backbone(rebuild=True) == path and len(calls) == 2
    assert all(not s.startswith("C") for s in _pretrain.her2st_pretraining_sections())
    assert len(_pretrain.her2st_pretraining_sections()) == 29


def test_default_backbone_path_hashes_only_the_recipes_size(monkeypatch):
    from sthinge.tl import _backbone

    path = _backbone.default_backbone_path()
    monkeypatch.setitem(_backbone.CPU_PRESETS, "cpu-huge", {"n_layers": 24, "d_model": 1024})
    assert _backbone.default_backbone_path() == path  # another size: the cached default stays valid
    preset = _backbone.HER2ST_RECIPE["preset"]
    monkeypatch.setitem(_backbone.CPU_PRESETS, preset, {**_backbone.CPU_PRESETS[preset], "n_layers": 6})
    assert _backbone.default_backbone_path() != path  # the recipe's own size changed: a new file


@pytest.mark.realdata
def test_her2st_sections_mark_unlisted_genes_missing(her2st_dir):
    from sthinge.datasets import her2st

    table = her2st(["A1", "B1"], path=her2st_dir).tables[K.TABLE_KEY]
    vocab = st._vocab.cellfm_vocab()
    maps = [_var_to_vocab(table, vocab)]
    panel = sorted(maps[0], key=list(vocab).index)
    corpus = _build_corpus([table], panel, maps, st._vocab.cellfm_gene_ids(panel), None, K.SECTION_KEY, K.VAR_SECTIONS)
    listed = table.var[K.VAR_SECTIONS].astype(str)
    for s in ("A1", "B1"):
        row = np.flatnonzero((table.obs[K.SECTION_KEY] == s).to_numpy())[0]
        present = corpus.present[corpus.group[row]]
        expected = [s in listed.iloc[maps[0][g]].split(",") for g in panel]
        np.testing.assert_array_equal(present, expected)
    assert (~corpus.present).any()  # the two sections do not list the same genes


def test_fit_with_the_default_backbone(monkeypatch, tmp_path):
    """``tl.fit(backbone="default")`` uses the public ``tl.default_backbone()`` checkpoint, referenced by path."""
    from sthinge.io import save_cellfm
    from sthinge.models import CellFM
    from sthinge.tl import _backbone as _pretrain

    torch.manual_seed(0)
    net = CellFM.from_preset("tiny")
    path = save_cellfm(net, tmp_path / "default.pt")
    calls = []
    monkeypatch.setattr(_pretrain, "default_backbone", lambda: calls.append(1) or path)
    monkeypatch.setattr(st.settings, "verbosity", 0)
    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=12, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=12, vocab="cellfm-80m")
    model = st.tl.fit(
        sdata, backbone="default", embedding_key="synthetic_factors", max_epochs=1, min_epochs=0, batch_size=8, seed=0
    )
    assert calls == [1]
    assert model.backbone_source["kind"] == "file" and model.backbone_source["path"] == str(path.resolve())
    ref = net.state_dict()
    emb = {k: v for k, v in model.module.state_dict().items() if k.startswith("gene_emb") and k in ref}
    assert emb and all(torch.equal(v, ref[k]) for k, v in emb.items())  # the frozen embedding is that file's
    with pytest.raises(ValueError, match="`weights` does not apply to `backbone='default'`"):
        st.tl.fit(sdata, backbone="default", weights=path, embedding_key="synthetic_factors", max_epochs=1)
    assert "default_backbone" in st.tl.__all__
