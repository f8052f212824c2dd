"""CellFM: names, sizes, the forward's invariances and the pre-training loss."""

from __future__ import annotations

import pytest
import torch

from sthinge.models import NUMERICS, CellFM, CellFMConfig, masked_value_loss, pretraining_masks


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("preset", "count"), [("cellfm-800m", 797_391_105), ("cellfm-80m", 86_193_666)])
def test_meta_parameter_counts(preset, count):
    with torch.device("meta"):
        model = CellFM.from_preset(preset)
    assert all(p.is_meta for p in model.parameters())
    assert _n_params(model) == count


def test_state_dict_names_are_the_port_names():
    with torch.device("meta"):
        model = CellFM.from_preset("cellfm-80m")
    expected = {
        "gene_emb": (27856, 1536),
        "cls_token": (1, 1, 1536),
        "zero_emb": (1, 1, 1536),
        "value_enc.mask_emb": (1, 1, 1536),
        "value_enc.value_enc.w1.weight": (256, 1),
        "value_enc.value_enc.w3.weight": (256, 256),
        "value_enc.value_enc.table.weight": (1536, 256),
        "value_enc.value_enc.a": (1, 1),
        "ST_emb": (1, 2, 1536),
        "ST_enc.w1.weight": (256, 1),
        "ST_enc.w3.weight": (256, 256),
        "ST_enc.table.weight": (1536, 256),
        "ST_enc.a": (1, 1),
        "value_dec.w1.weight": (1536, 1536),
        "value_dec.w2.weight": (1, 1536),
        "cellwise_dec.map.weight": (1536, 1536),
    }
    for i in range(2):
        for p in "qkvuo":
            expected[f"encoder.{i}.attn.{p}_proj.weight"] = (1536, 1536)
        for f in "uvo":
            expected[f"encoder.{i}.ffn.{f}_proj.weight"] = (1536, 1536)
        for n in (1, 2):
            expected[f"encoder.{i}.post_norm{n}.weight"] = (1536,)
            expected[f"encoder.{i}.post_norm{n}.bias"] = (1536,)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == expected


def test_800m_config_and_constants():
    config = CellFMConfig.from_preset("cellfm-800m")
    assert config.n_emb_rows == 24080 and config.head_dim == 32
    assert config.alpha == pytest.approx(2.990698, abs=1e-6) and config.beta == pytest.approx(0.236435, abs=1e-6)
    assert CellFMConfig.from_preset("cellfm-80m").alpha == pytest.approx(1.414214, abs=1e-6)
    official = CellFMConfig.from_preset("tiny", numerics="hinge-official")
    assert (official.leaky_relu_slope, official.ln_eps) == (0.01, 1e-6)
    assert (config.leaky_relu_slope, config.ln_eps) == (NUMERICS["cellfm"]["leaky_relu_slope"], 1e-7)
    model = CellFM.from_preset("tiny", numerics="hinge-official", vocab_size=50)
    assert model.encoder[0].post_norm1.eps == 1e-6 and model.value_dec.slope == 0.01
    with pytest.raises(ValueError, match="preset"):
        CellFM.from_preset("cellfm-8b")
    with pytest.raises(ValueError, match="divisible"):
        CellFMConfig(d_model=30, n_heads=4)


def test_init_follows_cellfm():
    model = CellFM.from_preset("tiny")
    assert torch.all(model.gene_emb[0] == 0)
    assert torch.all(model.value_enc.mask_emb == 0) and torch.all(model.zero_emb == 0)
    assert model.value_enc.value_enc.a.item() == 0
    ln = model.encoder[0].post_norm1
    assert torch.all(ln.weight == 1) and torch.all(ln.bias == 0)


def _batch(model, B=3, L=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, model.config.vocab_size + 1, (B, L), generator=g)
    values = torch.rand(B, L, generator=g) * 3
    visible = (torch.rand(B, L, generator=g) > 0.3).float()
    return ids, values, visible


@pytest.fixture
def small():
    torch.manual_seed(0)
    return CellFM.from_preset("tiny", n_layers=4, d_model=32, vocab_size=60, n_bins=16).eval()


def test_forward_shapes_and_padding_invariance(small):
    ids, values, visible = _batch(small)
    B, L = ids.shape
    pad = torch.zeros(B, L, dtype=torch.bool)
    pred, cls = small(ids, values, visible, pad)
    assert pred.shape == (B, L) and cls.shape == (B, 32)
    # appending padding changes nothing for the real tokens (pads are never keys, ν counts real genes)
    P = 4
    ids_p = torch.cat([ids, torch.zeros(B, P, dtype=torch.long)], 1)
    pad_p = torch.cat([pad, torch.ones(B, P, dtype=torch.bool)], 1)
    pred_p, cls_p = small(
        ids_p, torch.cat([values, torch.randn(B, P)], 1), torch.cat([visible, torch.ones(B, P)], 1), pad_p
    )
    torch.testing.assert_close(pred_p[:, :L], pred, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls_p, cls, atol=1e-5, rtol=1e-5)


def test_forward_is_permutation_equivariant_and_ignores_hidden_values(small):
    ids, values, visible = _batch(small)
    pad = torch.zeros_like(visible)
    pred, cls = small(ids, values, visible, pad)
    perm = torch.randperm(ids.shape[1])
    pred_p, cls_p = small(ids[:, perm], values[:, perm], visible[:, perm], pad)
    torch.testing.assert_close(pred_p, pred[:, perm], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(cls_p, cls, atol=1e-5, rtol=1e-5)
    changed = torch.where(visible.bool(), values, values + 5.0)
    pred_c, _ = small(ids, changed, visible, pad)
    torch.testing.assert_close(pred_c, pred, atol=1e-6, rtol=1e-6)
    shown = torch.where(visible.bool(), values + 5.0, values)
    assert not torch.allclose(small(ids, shown, visible, pad)[0], pred)


def test_key_mask_switches_at_half_depth(small):
    """Hidden tokens are keys only in the second half: their gene id then changes the visible genes' outputs."""
    ids, values, visible = _batch(small)
    pad = torch.zeros_like(visible)
    pred, _ = small(ids, values, visible, pad)
    hidden = visible == 0
    ids2 = torch.where(hidden, (ids % 50) + 1, ids)
    pred2, _ = small(ids2, values, visible, pad)
    assert not torch.allclose(pred2[~hidden], pred[~hidden])
    # the same forward, layer by layer: κ = [1, m] in layers 0..N/2-1, κ = 1 (no pads here) afterwards
    x = torch.cat([small.cls_token.expand(3, 1, -1), small.embed_genes(ids) + small.value_enc(values, visible)], 1)
    early = torch.cat([torch.ones(3, 1), visible], 1).unsqueeze(-1)
    scale = torch.full((3, 1, 1), ids.shape[1] ** -0.5)
    for i, layer in enumerate(small.encoder):
        x = layer(x, early if i < 2 else 1.0, scale)
    torch.testing.assert_close(small.value_dec(x[:, 1:]), pred, atol=1e-6, rtol=1e-6)


def test_st_tokens_need_depth():
    model = CellFM.from_preset("cellfm-80m", d_model=32, n_heads=4, vocab_size=60, n_bins=16).eval()
    ids, values, visible = _batch(model)
    pad = torch.zeros_like(visible)
    with pytest.raises(ValueError, match="depth"):
        model(ids, values, visible, pad)
    pred, cls = model(ids, values, visible, pad, depth=torch.full((3, 2), 5000.0))
    pred2, _ = model(ids, values, visible, pad, depth=torch.full((3, 2), 50.0))
    assert pred.shape == ids.shape and not torch.allclose(pred, pred2)


def test_pretraining_masks_counts():
    pad = torch.zeros(4, 30, dtype=torch.bool)
    pad[1, 20:] = True
    pad[2, 3:] = True  # n = 3: nothing chosen -> all 3 genes scored, none hidden
    visible, weight = pretraining_masks(pad, generator=torch.Generator().manual_seed(0))
    real = (~pad).float()
    assert weight.sum(1).tolist() == [6.0, 4.0, 3.0, 6.0]
    assert (real - visible).sum(1).tolist() == [4.0, 3.0, 0.0, 4.0]
    assert torch.all(visible <= real) and torch.all(weight <= real)
    assert torch.all((real - visible) <= weight)  # hidden genes are scored


def test_masked_value_loss_decreases_with_adam():
    torch.manual_seed(0)
    model = CellFM.from_preset("tiny", vocab_size=60, n_bins=32)
    model.train()
    g = torch.Generator().manual_seed(1)
    B, L = 8, 20
    ids = torch.stack([torch.randperm(60, generator=g)[:L] + 1 for _ in range(B)])
    values = torch.log1p(ids.float() % 7)  # a learnable function of the gene
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[:, 16:] = True
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(15):
        loss = masked_value_loss(model, ids, values, pad, generator=torch.Generator().manual_seed(step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3


def test_value_encoder_chunks_give_the_unchunked_embedding(monkeypatch):
    from sthinge.models.cellfm import SoftBinning

    torch.manual_seed(0)
    enc = SoftBinning(16, n_bins=32)
    with torch.no_grad():
        enc.a.fill_(0.3)
    x = torch.rand(7, 45) * 5  # 315 scalars
    whole = enc(x)
    monkeypatch.setattr(SoftBinning, "chunk_size", 50)  # 7 chunks, the last one short
    chunked = enc(x)
    assert chunked.shape == (7, 45, 16)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)
    # gradients flow through the chunks as through one call
    chunked.square().sum().backward()
    g_chunked = enc.w3.weight.grad.clone()
    enc.zero_grad()
    monkeypatch.setattr(SoftBinning, "chunk_size", 10**9)
    enc(x).square().sum().backward()
    torch.testing.assert_close(g_chunked, enc.w3.weight.grad, rtol=1e-5, atol=1e-6)
