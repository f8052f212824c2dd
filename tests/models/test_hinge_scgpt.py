"""HINGE on scGPT: identity at initialisation (equal to the bare scGPT to 1e-6), the key mask of hidden genes in the
first half of the layers, a frozen backbone, and a condition that steers once the modulators move."""

from __future__ import annotations

import pytest
import torch

from sthinge.models import HingeConfig, ScGPT
from sthinge.models.hinge_scgpt import SCGPT_MASK_VALUE, HingeScGPT

G, C, CLS = 12, 6, 1


def _model(init: str = "exact-identity", seed: int = 0) -> HingeScGPT:
    torch.manual_seed(seed)
    backbone = ScGPT.from_preset("tiny").double().eval()
    cfg = HingeConfig(n_genes=G, cond_dim=C, init=init)
    return HingeScGPT(backbone, torch.arange(5, 5 + G), cfg, cls_token_id=CLS).double().eval()


def _inputs(B: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(B, G, generator=g, dtype=torch.float64) * 4
    visible = (torch.rand(B, G, generator=g) > 0.4).double()
    return x, torch.full((B,), 20), visible, visible, torch.randn(B, C, generator=g, dtype=torch.float64)


def test_identity_at_initialisation_equals_the_bare_backbone():
    model = _model()
    x, t, nv, _, cond = _inputs()
    ones = torch.ones_like(x)
    ids = torch.cat([torch.full((3, 1), CLS), torch.arange(5, 5 + G).expand(3, -1)], dim=1)
    values = torch.cat([torch.zeros(3, 1, dtype=x.dtype), x], dim=1)
    bare = model.backbone(ids, values)[:, 1:]
    out = model(x, t, nv, ones, cond)
    assert (out - bare).abs().max() <= 1e-6 * bare.abs().max()
    # the condition does not act yet
    torch.testing.assert_close(model(x, t, nv, ones, cond * 5), out, rtol=0, atol=1e-12)


def test_hidden_genes_carry_the_mask_value_and_are_hidden_keys_in_the_first_half():
    model = _model()
    x, t, nv, visible, cond = _inputs()
    ids, values = model.tokens(x, visible)
    assert (values[:, 1:][visible == 0] == SCGPT_MASK_VALUE).all() and (values[:, 0] == 0).all()
    # reference: the bare layers, the key mask in the first half only
    hidden = torch.cat([torch.zeros(3, 1, dtype=torch.bool), visible == 0], dim=1)
    h = model.backbone.embed(ids, values)
    for i, layer in enumerate(model.backbone.blocks):
        h = layer(h, src_key_padding_mask=hidden if i < len(model.blocks) // 2 else None)
    ref = model.backbone.decode(h)[:, 1:]
    out = model(x, t, nv, visible, cond)
    assert (out - ref).abs().max() <= 1e-10
    # with every gene hidden the <cls> token is still a key: finite output
    assert torch.isfinite(model(x, t, nv, torch.zeros_like(visible), cond)).all()


def test_frozen_backbone_and_a_condition_that_steers_when_trained():
    model = _model(init="official")
    assert all(not p.requires_grad for p in model.backbone.parameters())
    trainable = model.trainable_parameters()
    assert trainable and all(p.requires_grad for p in trainable)
    x, t, nv, visible, cond = _inputs()
    model.train()
    loss = model(x, t, nv, visible, cond).square().mean()
    loss.backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.blocks[0].adaln.parameters())
    model.eval()
    with torch.no_grad():
        for block in model.blocks:
            block.adaln.proj.weight.normal_(0, 0.05)
    a, b = model(x, t, nv, visible, cond), model(x, t, nv, visible, -cond)
    assert (a - b).abs().max() > 1e-4


def test_bad_arguments():
    backbone = ScGPT.from_preset("tiny")
    cfg = HingeConfig(n_genes=G, cond_dim=C)
    with pytest.raises(ValueError, match="gene_ids must have shape"):
        HingeScGPT(backbone, torch.arange(5, 5 + G - 1), cfg, cls_token_id=CLS)
    with pytest.raises(ValueError, match="gene_ids must lie in"):
        HingeScGPT(backbone, torch.arange(10_000, 10_000 + G), cfg, cls_token_id=CLS)
    with pytest.raises(ValueError, match="cls_token_id"):
        HingeScGPT(backbone, torch.arange(5, 5 + G), cfg, cls_token_id=10_000)
    with pytest.raises(ValueError, match="variants"):
        HingeScGPT(
            backbone, torch.arange(5, 5 + G), HingeConfig(n_genes=G, cond_dim=C, variant="scratch"), cls_token_id=1
        )
