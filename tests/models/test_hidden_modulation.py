"""modulation="hidden": the condition also scales the hidden units of every frozen FFN and of the decoder."""

from __future__ import annotations

import pytest
import torch

from sthinge.models import CellFM, Hinge, HingeConfig, ScGPT, training_loss
from sthinge.models.hinge_scgpt import HingeScGPT
from sthinge.models.softadaln import HiddenModulation


def _pair(init: str, **config):
    """The same random backbone retrofitted with modulation 'paper' and 'hidden' (shared weights copied over)."""
    torch.manual_seed(0)
    backbone = CellFM.from_preset("tiny", n_layers=3, d_model=32, vocab_size=60, n_bins=16)
    with torch.no_grad():
        for name, p in backbone.named_parameters():
            if name.endswith(".bias") or name in ("zero_emb", "value_enc.value_enc.a"):
                p.normal_(0, 0.3)
    gene_ids = torch.arange(1, 11)
    kw = dict(n_genes=10, cond_dim=5, init=init, dropout=0.0, **config)
    paper = Hinge(backbone, gene_ids, HingeConfig(**kw))
    torch.manual_seed(0)
    backbone2 = CellFM.from_preset("tiny", n_layers=3, d_model=32, vocab_size=60, n_bins=16)
    backbone2.load_state_dict(backbone.state_dict())
    hidden = Hinge(backbone2, gene_ids, HingeConfig(**kw, modulation="hidden"))
    missing = hidden.load_state_dict(paper.state_dict(), strict=False).missing_keys
    return paper.eval(), hidden.eval(), missing


def _inputs(B=4, G=10, C=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    visible = (torch.rand(B, G, generator=g) < 0.5).float()
    x_t = torch.where(visible.bool(), torch.rand(B, G, generator=g) * 3, torch.randn(B, G, generator=g))
    return x_t, torch.randint(1, 51, (B,), generator=g), visible, visible, torch.randn(B, C, generator=g) * 3


@pytest.mark.parametrize("init", ["official", "exact-identity"])
def test_hidden_modulation_is_the_paper_model_at_init(init):
    paper, hidden, missing = _pair(init)
    # the only new parameters: one scale projection per block (D -> D hidden units) and one for the decoder
    assert sorted(missing) == sorted(
        [f"retentionblocks.{i}.ffn_hidden.proj.{w}" for i in range(3) for w in ("weight", "bias")]
        + ["final_layer.hidden.proj.weight", "final_layer.hidden.proj.bias"]
    )
    x_t, t, nv, v, cond = _inputs()
    with torch.no_grad():
        ref = paper(x_t, t, nv, v, cond)
        assert (hidden(x_t, t, nv, v, cond) - ref).abs().max().item() <= 1e-6
        # ... for any condition: the new scales start at exactly zero
        assert (hidden(x_t, t, nv, v, -2 * cond + 1) - paper(x_t, t, nv, v, -2 * cond + 1)).abs().max() <= 1e-6


def test_hidden_modulation_trains_and_changes_the_output():
    _, hidden, _ = _pair("official")
    hidden.train()
    new = [p for n, p in hidden.named_parameters() if "hidden" in n]
    assert new and all(p.requires_grad for p in new)
    frozen = {n: p.detach().clone() for n, p in hidden.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW(hidden.param_groups(), lr=1e-2)
    x0, cond = torch.rand(16, 10) * 3, torch.randn(16, 5)
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        loss = training_loss(hidden, x0, cond, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.abs().sum() > 0 for p in new)  # moved away from zero
    for n, p in hidden.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n  # the backbone stays frozen


def test_hidden_modulation_reaches_each_gene_differently():
    """A decoder hidden scale moves genes by different amounts (a shared shift would move them by one pattern)."""
    _, hidden, _ = _pair("exact-identity")
    x_t, t, nv, v, cond = _inputs(B=1)
    with torch.no_grad():
        before = hidden(x_t, t, nv, v, cond)
        hidden.final_layer.hidden.proj.bias.copy_(torch.linspace(-0.5, 0.5, 32))
        delta = hidden(x_t, t, nv, v, cond) - before
    assert delta.abs().max() > 1e-3
    assert delta.std() > 0.1 * delta.abs().mean()  # not one constant offset


def test_hidden_module_zero_at_init():
    m = HiddenModulation(8, 5)
    a = torch.randn(2, 3, 5)
    assert torch.equal(m(a, torch.randn(2, 8)), a)


def test_hidden_modulation_refused_for_hist_affine_ln():
    with pytest.raises(ValueError, match="hist-affine-ln"):
        HingeConfig(n_genes=4, cond_dim=3, variant="hist-affine-ln", modulation="hidden")
    with pytest.raises(ValueError, match="modulation"):
        HingeConfig(n_genes=4, cond_dim=3, modulation="wide")


def test_hidden_modulation_on_scgpt_is_identity_at_init():
    torch.manual_seed(0)
    backbone = ScGPT.from_preset("tiny")
    kw = dict(n_genes=10, cond_dim=5, init="exact-identity", dropout=0.0)
    paper = HingeScGPT(backbone, torch.arange(3, 13), HingeConfig(**kw), cls_token_id=1).eval()
    hidden = HingeScGPT(backbone, torch.arange(3, 13), HingeConfig(**kw, modulation="hidden"), cls_token_id=1).eval()
    missing = hidden.load_state_dict(paper.state_dict(), strict=False).missing_keys
    assert missing and all("hidden" in k for k in missing)
    x_t, t, nv, v, cond = _inputs()
    with torch.no_grad():
        assert (hidden(x_t.abs(), t, nv, v, cond) - paper(x_t.abs(), t, nv, v, cond)).abs().max() <= 1e-6
        hidden.decoder_hidden.proj.bias.fill_(0.3)
        assert (hidden(x_t.abs(), t, nv, v, cond) - paper(x_t.abs(), t, nv, v, cond)).abs().max() > 1e-4


def test_scgpt_decoder_split_is_its_forward():
    torch.manual_seed(0)
    decoder = ScGPT.from_preset("tiny").decoder
    h = torch.randn(2, 5, decoder.fc[0].in_features)
    torch.testing.assert_close(decoder.readout(decoder.features(h)), decoder(h), rtol=0, atol=0)
