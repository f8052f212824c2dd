"""CellFM-80M checkpoints carry two read-depth tokens (``ST_emb``, ``ST_enc``) that HINGE does not use: ``tl.fit``
accepts such a backbone (file or module), runs it on CLS + genes as the official HINGE code does, and the saved
model reloads from the same file with identical predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import sthinge as st
from sthinge import _constants as K
from sthinge.io import load_cellfm, save_cellfm
from sthinge.models import CellFM

FIT = dict(embedding_key="synthetic_factors", max_epochs=1, min_epochs=0, batch_size=8, seed=0)


@pytest.fixture
def data(monkeypatch, one_thread):
    monkeypatch.setattr(st.settings, "verbosity", 0)
    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=12, image=False, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=12, vocab="cellfm-80m")
    return sdata


def _st_backbone(tmp_path):
    torch.manual_seed(0)
    net = CellFM.from_preset("tiny", st_tokens=True)
    assert net.config.st_tokens and hasattr(net, "ST_emb")
    return net, save_cellfm(net, tmp_path / "st.pt")


def test_fit_drops_read_depth_tokens_of_a_file_backbone(data, tmp_path):
    net, path = _st_backbone(tmp_path)
    assert load_cellfm(path).config.st_tokens  # the file keeps them
    model = st.tl.fit(data, backbone=path, **FIT)
    assert not model.module.backbone_config.st_tokens
    ref = net.state_dict()
    shared = {k: v for k, v in model.module.state_dict().items() if k.startswith("gene_emb") and k in ref}
    assert shared and all(torch.equal(v, ref[k]) for k, v in shared.items())  # the file's weights, not random ones
    a = st.tl.predict(data, model, n_steps=2, seed=1, inplace=False)
    folder = model.save(tmp_path / "model")
    again = st.tl.HingeModel.load(folder)
    b = st.tl.predict(data, again, n_steps=2, seed=1, inplace=False)
    np.testing.assert_array_equal(a.X, b.X)


def test_fit_drops_read_depth_tokens_of_a_module(data, tmp_path):
    net, _ = _st_backbone(tmp_path)
    model = st.tl.fit(data, backbone=net, **FIT)
    assert not model.module.backbone_config.st_tokens and net.config.st_tokens  # the user's module is unchanged
    assert model.n_genes == len(data.tables[K.TABLE_KEY].uns[K.GENES_KEY]["genes"])
