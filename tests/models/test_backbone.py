"""The backbone contract: CellFM and scGPT both meet it, `retrofit` builds the matching HINGE, vocabularies map
symbols to ids (and name the genes outside), scGPT's own pre-training objective trains, and an scGPT written by
`save_scgpt` in the published layout loads back exactly."""

from __future__ import annotations

import json

import pytest
import torch

from sthinge.io import load_scgpt, save_scgpt
from sthinge.models import (
    BACKBONES,
    CellFM,
    ExpressionBackbone,
    Hinge,
    HingeConfig,
    HingeScGPT,
    ScGPT,
    backbone_kind,
    retrofit,
)
from sthinge.models.scgpt import SPECIAL_TOKENS


def _scgpt(vocab_genes=("A", "B", "C", "D", "E", "F", "G", "H")) -> ScGPT:
    n = len(vocab_genes)
    torch.manual_seed(0)
    net = ScGPT.from_preset("tiny", vocab_size=n + 3, pad_token_id=n, dropout=0.0)
    net.vocab = {**{g: i for i, g in enumerate(vocab_genes)}, **{t: n + i for i, t in enumerate(SPECIAL_TOKENS)}}
    return net


@pytest.mark.parametrize("net", [CellFM.from_preset("tiny"), _scgpt()], ids=["cellfm", "scgpt"])
def test_both_backbones_meet_the_contract(net):
    assert isinstance(net, ExpressionBackbone)
    kind = backbone_kind(net)
    assert kind is BACKBONES[net.kind] and backbone_kind(net.config) is kind
    B, L = 2, 3
    ids = torch.full((B, L), net.first_gene_id + 1)
    tokens = net.embed_genes(ids) + net.encode_values(torch.rand(B, L))
    D = tokens.shape[-1]
    assert len(net.blocks) == net.config.n_layers and net.decode(torch.randn(B, L, D)).shape == (B, L)
    symbols = list(net.vocabulary()[:3])
    assert net.gene_ids(symbols) == [net.first_gene_id + i for i in range(3)]
    with pytest.raises(KeyError, match=r"1 of 2 gene\(s\) are not in the .*NOT_A_GENE"):
        net.gene_ids([symbols[0], "NOT_A_GENE"])
    model = retrofit(net, net.gene_ids(symbols), HingeConfig(n_genes=3, cond_dim=4))
    assert isinstance(model, kind.hinge) and backbone_kind(model) is kind
    assert all(not p.requires_grad for p in net.blocks.parameters())


def test_retrofit_builds_the_matching_hinge_and_from_state_restores_it():
    cfg = HingeConfig(n_genes=3, cond_dim=4, init="exact-identity")
    assert type(retrofit(CellFM.from_preset("tiny"), [1, 2, 3], cfg)) is Hinge
    net = _scgpt()
    model = retrofit(net, [0, 2, 4], cfg)
    assert type(model) is HingeScGPT and int(model.cls_id) == net.vocab["<cls>"]
    with torch.no_grad():
        for p in model.trainable_parameters():
            p.add_(0.01 * torch.randn_like(p))
    state = model.state_dict()
    again = HingeScGPT.from_state(_scgpt(), state, cfg)
    again.load_state_dict(state)
    x, t, v, c = torch.rand(2, 3), torch.full((2,), 5), torch.ones(2, 3), torch.randn(2, 4)
    torch.testing.assert_close(again.eval()(x, t, v, v, c), model.eval()(x, t, v, v, c), rtol=0, atol=0)


def test_scgpt_without_a_vocabulary_says_how_to_get_one():
    net = ScGPT.from_preset("tiny")
    with pytest.raises(ValueError, match="no vocabulary"):
        net.gene_ids(["A"])
    with pytest.raises(ValueError, match="no vocabulary"):
        HingeScGPT(net, torch.arange(3), HingeConfig(n_genes=3, cond_dim=4))


def test_special_tokens_are_not_genes():
    with pytest.raises(KeyError, match="<cls>"):
        _scgpt().gene_ids(["A", "<cls>"])


def test_scgpt_pretraining_loss_hides_values_and_trains():
    net = _scgpt().train()
    g = torch.Generator().manual_seed(0)
    ids = torch.arange(8).expand(16, 8)
    level = torch.rand(16, 1, generator=g) * 3  # one level per row: hidden values follow from the visible ones
    values = level * torch.linspace(0.5, 1.5, 8)
    pad = torch.zeros(16, 8, dtype=torch.bool)
    pad[:, -2:] = True  # two pads per row: hidden keys, never scored
    seen = {}

    def spy(module, args):
        seen["values"], seen["mask"] = args[1], args[2]

    handle = net.register_forward_pre_hook(spy)
    net.pretraining_loss(ids, values, pad, mask_ratio=0.5, generator=torch.Generator().manual_seed(1))
    handle.remove()
    hidden = seen["values"][:, 1:] == -1.0
    assert (hidden.sum(1) == 3).all()  # floor(0.5 * 6 real tokens)
    assert not hidden[:, -2:].any() and seen["mask"][:, -2:].all() and not seen["mask"][:, 0].any()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for step in range(150):
        loss = net.pretraining_loss(ids, values, pad, mask_ratio=0.5, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert last < 0.2 * first and last < 0.2 * float(values[:, :6].var())  # better than the mean


def test_save_scgpt_writes_the_published_layout_and_loads_back_exactly(tmp_path):
    net = _scgpt().double()
    folder = save_scgpt(net, tmp_path / "scg")
    assert sorted(p.name for p in folder.iterdir()) == ["args.json", "best_model.pt", "vocab.json"]
    args = json.loads((folder / "args.json").read_text())
    assert (args["embsize"], args["nheads"], args["d_hid"], args["nlayers"]) == (64, 4, 64, 2)
    state = torch.load(folder / "best_model.pt", weights_only=True)
    assert "transformer_encoder.layers.0.self_attn.Wqkv.weight" in state
    assert not any("in_proj" in k for k in state)
    back, vocab = load_scgpt(folder, dtype=torch.float64)
    assert vocab == net.vocab and back.vocab == net.vocab
    ids = torch.tensor([[9, 0, 3, 5]])
    values = torch.tensor([[0.0, 1.5, 0.2, 3.0]], dtype=torch.float64)
    torch.testing.assert_close(back(ids, values), net.eval()(ids, values), rtol=0, atol=0)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_scgpt(net, folder)
    save_scgpt(net, folder, overwrite=True)  # replaced whole, no stray folders beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scg"]
