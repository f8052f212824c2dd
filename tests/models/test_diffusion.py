"""Masking schedule, forward masks and the training loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sthinge.models import HingeConfig, MaskSchedule, calibrate, fill_values, training_loss


def test_poly_auto_exponent_and_counts_match_the_official_scheduler():
    s = MaskSchedule(200)
    assert s.exponent == pytest.approx(math.log(200) / math.log(50))
    assert round(s.exponent, 3) == 1.354
    assert s.n_masked_table[0] == 0 and s.n_masked_table[50] == 200
    assert s.n_masked_table[49] == 199  # the first reverse step reveals K_tail = 1 gene
    assert s.t_cap() == 7 and s.n_masked_table[7] == 36  # the warm-start cap (docs/method.md, "Training")
    assert round(MaskSchedule(100).exponent, 3) == 1.177 and round(MaskSchedule(300).exponent, 3) == 1.458
    assert MaskSchedule(50).exponent == 1.05 and MaskSchedule(10**9).exponent == 4.0  # clipped
    assert MaskSchedule(30, kind="linear").exponent == 1.0
    assert MaskSchedule(30, kind="poly", zeta=2.0).n_masked_table[25] == math.floor((1 - 0.25) * 30)
    with pytest.raises(ValueError, match="zeta"):
        MaskSchedule(30, kind="poly")
    with pytest.raises(ValueError, match="masking"):
        MaskSchedule(30, masking="random")


def test_pi_is_the_reveal_probability():
    s = MaskSchedule(200)
    t = torch.arange(1, 51)
    ab = s.alpha_bar(t)
    ab_prev = s.alpha_bar(t - 1)
    torch.testing.assert_close(s.pi(t), (ab_prev - ab) / (1 - ab))
    assert s.pi(torch.tensor([1])).item() == pytest.approx(1.0)


@settings(max_examples=25, deadline=None)
@given(
    n_genes=st.integers(1, 60),
    n_steps=st.integers(1, 60),
    masking=st.sampled_from(["exact", "bernoulli"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_reveal_times_give_nested_masks_with_exact_counts(n_genes, n_steps, masking, seed):
    s = MaskSchedule(n_genes, n_steps, masking=masking)
    tau = s.reveal_times(4, generator=torch.Generator().manual_seed(seed))
    assert tau.shape == (4, n_genes) and tau.min() >= 1 and tau.max() <= n_steps
    for t in range(1, n_steps + 1):
        visible, next_visible = s.masks(torch.full((4,), t), tau)
        assert torch.all(next_visible >= visible)  # m_{t-1} ⊇ m_t
        if masking == "exact":
            assert torch.all((1 - visible).sum(1) == s.n_masked_table[t])
            assert torch.all((1 - next_visible).sum(1) == s.n_masked_table[t - 1])
    visible_T, _ = s.masks(torch.full((4,), n_steps), tau)
    assert torch.all(visible_T == 0)


def test_bernoulli_masking_has_the_schedule_marginals():
    s = MaskSchedule(20, 10, masking="bernoulli")
    tau = s.reveal_times(20_000, generator=torch.Generator().manual_seed(0))
    for t in (1, 3, 7, 9):
        frac = (tau <= t).float().mean().item()
        assert frac == pytest.approx(1 - s.alpha_bar(torch.tensor(t)).item(), abs=0.01)
    # per-gene independence: the number masked varies between samples
    assert (tau <= 5).sum(1).unique().numel() > 5


def test_sample_t_and_curriculum():
    s = MaskSchedule(200)
    t = s.sample_t(5000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 1 and t.max() == 50 and t.unique().numel() == 50
    tc = s.sample_t(1000, generator=torch.Generator().manual_seed(0), t_max=s.t_cap())
    assert tc.max() == 7
    with pytest.raises(ValueError, match="t_max"):
        s.sample_t(3, t_max=0)


def test_fill_and_calibrate():
    g = torch.Generator().manual_seed(0)
    assert torch.all(fill_values((3, 4), "zero") == 0)
    noise = fill_values((1000,), "gauss", generator=g)
    assert abs(noise.mean().item()) < 0.1 and abs(noise.std().item() - 1) < 0.1
    with pytest.raises(ValueError, match="fill"):
        fill_values((3,), "uniform")
    x_t, x0_hat = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[9.0, 8.0, 7.0]])
    assert calibrate(x_t, x0_hat, torch.tensor([[1.0, 0.0, 1.0]])).tolist() == [[1.0, 8.0, 3.0]]


@pytest.mark.parametrize("fill", ["gauss", "zero"])
def test_training_loss_feeds_the_model_the_official_arguments(recording_model, fill):
    model = recording_model(n_genes=30, mask_fill=fill)
    s = MaskSchedule(30)
    x0 = torch.rand(16, 30) + 5
    loss = training_loss(
        model, x0, torch.zeros(16, 2), s, loss_weight="revealed", generator=torch.Generator().manual_seed(0)
    )
    call = model.calls[-1]
    mt, mp, x_t, t, out = call["mt"], call["mp"], call["x_t"], call["t"], call["out"]
    assert torch.all(mp >= mt)
    for b in range(16):
        assert (1 - mt[b]).sum() == s.n_masked_table[t[b]] and (1 - mp[b]).sum() == s.n_masked_table[t[b] - 1]
    assert torch.equal(x_t[mt.bool()], x0[mt.bool()])
    masked = x_t[~mt.bool()]
    assert torch.all(masked == 0) if fill == "zero" else masked.abs().max() < 5
    d = mp - mt
    assert loss.item() == pytest.approx(((d * (out - x0) ** 2).sum() / d.sum()).item(), rel=1e-6)
    loss_pi = training_loss(model, x0, torch.zeros(16, 2), s, loss_weight="pi_t", generator=torch.Generator())
    call = model.calls[-1]
    w = s.pi(call["t"]).float().unsqueeze(1) * (1 - call["mt"])
    assert loss_pi.item() == pytest.approx(((w * (call["out"] - x0) ** 2).sum() / (16 * 30)).item(), rel=1e-6)
    loss_masked = training_loss(model, x0, torch.zeros(16, 2), s, loss_weight="masked", generator=torch.Generator())
    call = model.calls[-1]
    hidden = 1 - call["mt"]  # every masked gene, not only those revealed at t
    assert hidden.sum() > (call["mp"] - call["mt"]).sum()
    ref = (hidden * (call["out"] - x0) ** 2).sum() / hidden.sum()
    assert loss_masked.item() == pytest.approx(ref.item(), rel=1e-6)
    with pytest.raises(ValueError, match="loss_weight"):
        training_loss(model, x0, torch.zeros(16, 2), s, loss_weight="all")


def test_training_loss_is_reproducible_under_a_generator(tiny_hinge):
    tiny_hinge.eval()
    x0, cond = torch.rand(4, 12), torch.randn(4, 6)
    a = training_loss(tiny_hinge, x0, cond, generator=torch.Generator().manual_seed(3))
    b = training_loss(tiny_hinge, x0, cond, generator=torch.Generator().manual_seed(3))
    assert a.item() == b.item()


def test_training_loss_decreases_when_the_condition_determines_expression(make_hinge):
    """A tiny task: expression is a fixed linear function of the histology features."""
    torch.manual_seed(0)
    G, C = 12, 6
    model = make_hinge(n_genes=G, cond_dim=C, dropout=0.0, n_steps=10)
    W = torch.randn(C, G)

    def batch(g, n=64):
        cond = torch.randn(n, C, generator=g)
        return cond @ W / 2 + 2, cond

    def held_out_loss():
        g = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return sum(training_loss(model, *batch(g), generator=g).item() for _ in range(10)) / 10

    before = held_out_loss()
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.param_groups(), lr=3e-3)
    for _ in range(60):
        loss = training_loss(model, *batch(g), generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize(("n_genes", "n_steps"), [(200, 50), (1, 1), (7, 3), (50, 50), (30, 1000)])
def test_cosine_schedule_endpoints_and_counts(n_genes, n_steps):
    s = MaskSchedule(n_genes, n_steps, kind="cosine")
    ab = s.alpha_bar_table
    assert s.exponent is None  # not a power law
    assert ab[0].item() == 1.0 and ab[-1].item() == 0.0  # exactly, so s_T = G
    assert torch.all(ab[1:] < ab[:-1])
    for t in range(1, n_steps):
        assert ab[t].item() == pytest.approx(math.cos(math.pi / 2 * t / n_steps), abs=1e-15)
    table = s.n_masked_table
    assert table[0] == 0 and table[-1] == n_genes and len(table) == n_steps + 1
    assert all(a <= b for a, b in zip(table, table[1:]))  # monotone
    assert 1 <= s.t_cap() <= n_steps
    assert s.pi(torch.tensor([n_steps])).item() == pytest.approx(ab[-2].item())  # (ᾱ_{T−1} − 0)/(1 − 0)


def test_cosine_schedule_differs_from_the_power_laws_and_comes_from_the_config():
    s = MaskSchedule(200, 50, kind="cosine")
    assert s.n_masked_table[25] == math.floor((1 - math.cos(math.pi / 4)) * 200) == 58
    assert s.n_masked_table[25] != MaskSchedule(200, 50, kind="linear").n_masked_table[25]
    assert s.n_masked_table[25] != MaskSchedule(200, 50).n_masked_table[25]
    config = HingeConfig(n_genes=200, schedule="cosine")
    assert MaskSchedule.from_config(config) == s


@settings(max_examples=20, deadline=None)
@given(
    n_genes=st.integers(1, 60),
    n_steps=st.integers(1, 60),
    masking=st.sampled_from(["exact", "bernoulli"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cosine_schedule_gives_nested_masks(n_genes, n_steps, masking, seed):
    s = MaskSchedule(n_genes, n_steps, kind="cosine", masking=masking)
    tau = s.reveal_times(4, generator=torch.Generator().manual_seed(seed))
    assert tau.min() >= 1 and tau.max() <= n_steps
    for t in range(1, n_steps + 1):
        visible, next_visible = s.masks(torch.full((4,), t), tau)
        assert torch.all(next_visible >= visible)
        if masking == "exact":
            assert torch.all((1 - visible).sum(1) == s.n_masked_table[t])
    visible_T, _ = s.masks(torch.full((4,), n_steps), tau)
    assert torch.all(visible_T == 0)


def test_a_tiny_hinge_trains_a_step_with_the_cosine_schedule(make_hinge):
    torch.manual_seed(0)
    model = make_hinge(n_genes=12, cond_dim=6, n_steps=10, schedule="cosine")
    x0, cond = torch.rand(8, 12) * 3, torch.randn(8, 6)
    params = [p for p in model.parameters() if p.requires_grad]
    before = [p.detach().clone() for p in params]
    opt = torch.optim.Adam(params, lr=1e-3)
    loss = training_loss(model, x0, cond, generator=torch.Generator().manual_seed(0), loss_weight="masked")
    assert torch.isfinite(loss) and loss.item() > 0
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
