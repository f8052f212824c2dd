"""likelihood="gaussian": scoring rules, the σ head, drawing sampler, training, save/load and config checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from sthinge.models import (
    Hinge,
    HingeConfig,
    MaskSchedule,
    beta_nll,
    censored_gaussian_moments,
    gaussian_crps,
    load_official_hinge,
    sample,
    sample_reference,
    training_loss,
)
from sthinge.models.likelihood import INIT_STD, MIN_STD
from sthinge.models.sampler import _all_draws, sampling_steps


def _perturb(model: Hinge, scale: float = 0.05, head_scale: float = 0.3) -> Hinge:
    """Non-trivial modulation and a σ head that varies over genes and spots."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * (head_scale if name.startswith("std_head.") else scale))
    return model


def _inputs(G: int, C: int, B: int, T: int, generator: torch.Generator):
    schedule = MaskSchedule(G, T)
    t = schedule.sample_t(B, generator=generator)
    visible, next_visible = schedule.masks(t, schedule.reveal_times(B, generator=generator))
    x_t = torch.where(visible.bool(), torch.rand(B, G, generator=generator) * 4, torch.randn(B, G, generator=generator))
    return x_t, t, next_visible, visible, torch.randn(B, C, generator=generator)


# ---------------------------------------------------------------------------------------------------------------
# (a) the point model is untouched; the gaussian model's mean is the point model's output


@pytest.mark.parametrize("init", ["official", "exact-identity"])
def test_gaussian_head_leaves_the_mean_and_the_point_model_unchanged(make_hinge, init):
    torch.manual_seed(0)
    point = make_hinge(init=init).eval()
    torch.manual_seed(0)
    gauss = make_hinge(init=init, likelihood="gaussian").eval()
    assert point.std_head is None and not any(k.startswith("std_head") for k in point.state_dict())
    extra = set(gauss.state_dict()) - set(point.state_dict())
    assert extra == {"std_head.w1.weight", "std_head.w1.bias", "std_head.w2.weight", "std_head.w2.bias"}
    assert all(p.requires_grad for p in gauss.std_head.parameters())
    for k, v in point.state_dict().items():  # the head is created last: everything else is initialised identically
        assert torch.equal(v, gauss.state_dict()[k]), k
    args = _inputs(12, 6, 4, 50, torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = point(*args)
        mu, sd = gauss(*args, return_std=True)
        plain = gauss(*args)
    assert torch.equal(mu, ref) and torch.equal(plain, ref)
    assert sd.dtype == torch.float32 and torch.allclose(sd, torch.full_like(sd, INIT_STD))  # σ = 1 at init
    with pytest.raises(ValueError, match="likelihood='gaussian'"):
        point(*args, return_std=True)


# ---------------------------------------------------------------------------------------------------------------
# (c) scoring rules


def _mc_crps(mean: float, std: float, y: float, lower: float | None, n: int = 400_000) -> float:
    g = torch.Generator().manual_seed(0)
    x = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    x2 = mean + std * torch.randn(n, generator=g, dtype=torch.float64)
    if lower is not None:
        x, x2 = x.clamp_min(lower), x2.clamp_min(lower)
    return ((x - y).abs().mean() - 0.5 * (x - x2).abs().mean()).item()


def test_crps_known_value_and_monte_carlo():
    one = torch.tensor(1.0, dtype=torch.float64)
    zero = torch.tensor(0.0, dtype=torch.float64)
    assert gaussian_crps(zero, one, zero).item() == pytest.approx((math.sqrt(2) - 1) / math.sqrt(math.pi), rel=1e-12)
    # CRPS(N(μ, σ²), y) = σ · CRPS(N(0, 1), (y − μ)/σ)
    assert gaussian_crps(2 + zero, 3 * one, 2 + 1.5 * one).item() == pytest.approx(
        3 * gaussian_crps(zero, one, 0.5 * one).item(), rel=1e-12
    )
    cases = [(0.0, 1.0, 0.0), (1.5, 0.4, 2.3), (0.3, 0.8, 0.0), (-0.5, 1.0, 0.0), (-0.5, 1.0, 1.2), (2.0, 0.5, 0.0)]
    for lower in (None, 0.0):
        for mean, std, y in cases:
            closed = gaussian_crps(torch.tensor(mean), torch.tensor(std), torch.tensor(y), lower=lower).item()
            assert closed == pytest.approx(_mc_crps(mean, std, y, lower), abs=4e-3), (lower, mean, std, y)
    # far above the censoring point the censored CRPS is the Gaussian one; an observation below it costs |x − L| more
    m, s, y = torch.tensor(5.0), torch.tensor(0.5), torch.tensor(5.2)
    torch.testing.assert_close(gaussian_crps(m, s, y, lower=0.0), gaussian_crps(m, s, y))
    below = gaussian_crps(m, s, torch.tensor(-1.0), lower=0.0) - gaussian_crps(m, s, torch.tensor(0.0), lower=0.0)
    assert below.item() == pytest.approx(1.0, rel=1e-6)


def test_crps_gradients_are_finite_and_analytic():
    mean = torch.tensor([-50.0, -3.0, 0.0, 0.2, 4.0, 60.0], dtype=torch.float64, requires_grad=True)
    std = torch.tensor([MIN_STD, 0.3, 1.0, 2.0, 1e-3, 5.0], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0.0, 0.0, 0.5, 3.0, 4.0, 0.0], dtype=torch.float64)
    for lower in (None, 0.0):
        gm, gs = torch.autograd.grad(gaussian_crps(mean, std, y, lower=lower).sum(), (mean, std))
        assert torch.isfinite(gm).all() and torch.isfinite(gs).all()
        assert gm.abs().max() <= 1 + 1e-9  # |∂CRPS/∂μ| ≤ 1: no exploding gradients
    # Gaussian: ∂/∂μ = 1 − 2Φ(z), ∂/∂σ = 2φ(z) − 1/√π
    gm, gs = torch.autograd.grad(gaussian_crps(mean, std, y).sum(), (mean, std))
    z = (y - mean) / std
    torch.testing.assert_close(gm, (1 - 2 * torch.special.ndtr(z)).detach())
    pdf = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    torch.testing.assert_close(gs, (2 * pdf - 1 / math.sqrt(math.pi)).detach())
    m = torch.randn(6, dtype=torch.float64, requires_grad=True)
    s = (torch.rand(6, dtype=torch.float64) + 0.2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: gaussian_crps(a, b, y.abs(), lower=0.0), (m, s))


def test_crps_is_minimised_by_the_true_distribution():
    g = torch.Generator().manual_seed(0)
    x = (0.3 + 0.7 * torch.randn(200_000, generator=g, dtype=torch.float64)).clamp_min(0)  # censored at 0

    def score(m, s, lower):
        return (
            gaussian_crps(torch.tensor(m, dtype=torch.float64), torch.tensor(s, dtype=torch.float64), x, lower=lower)
            .mean()
            .item()
        )

    best = score(0.3, 0.7, 0.0)
    for m, s in ((0.2, 0.7), (0.4, 0.7), (0.3, 0.6), (0.3, 0.8)):
        assert score(m, s, 0.0) > best
    assert score(0.3, 0.7, None) > best  # the uncensored Gaussian scores worse on censored data


def test_beta_nll():
    mean = torch.tensor([0.0, 1.0, 2.0], requires_grad=True)
    std = torch.tensor([0.5, 1.0, 2.0], requires_grad=True)
    x = torch.tensor([1.0, 1.0, -1.0])
    nll = 0.5 * (std.log() * 2 + (x - mean) ** 2 / std**2)
    torch.testing.assert_close(beta_nll(mean, std, x, beta=0.0), nll)
    torch.testing.assert_close(beta_nll(mean, std, x), nll * std.detach())  # β = 0.5: sg(σ²)^½ = σ
    (gm,) = torch.autograd.grad(beta_nll(mean, std, x).sum(), mean)
    torch.testing.assert_close(gm, ((mean - x) / std).detach())  # the NLL's gradient times σ
    with pytest.raises(ValueError, match="beta"):
        beta_nll(mean, std, x, beta=1.5)


def test_censored_moments_match_monte_carlo():
    g = torch.Generator().manual_seed(0)
    for mu, sd in ((2.0, 0.5), (0.3, 0.8), (-1.0, 0.7), (0.0, 1.0)):
        x = (mu + sd * torch.randn(400_000, generator=g, dtype=torch.float64)).clamp_min(0)
        m, v = censored_gaussian_moments(torch.tensor(mu, dtype=torch.float64), torch.tensor(sd, dtype=torch.float64))
        assert m.item() == pytest.approx(x.mean().item(), abs=3e-3)
        assert v.item() == pytest.approx(x.var().item(), rel=2e-2, abs=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# training loss: same genes and weights as the point loss, scored with the chosen rule


@pytest.mark.parametrize("loss_weight", ["masked", "revealed", "pi_t"])
@pytest.mark.parametrize("rule", ["crps", "beta_nll"])
def test_training_loss_scores_the_same_genes_with_the_rule(loss_weight, rule, gauss_recording_model):
    G, B = 20, 16
    model = gauss_recording_model(n_genes=G, likelihood_loss=rule)
    s = MaskSchedule(G)
    x0 = torch.rand(B, G) * 3
    loss = training_loss(
        model, x0, torch.zeros(B, 2), s, loss_weight=loss_weight, generator=torch.Generator().manual_seed(0)
    )
    c = model.calls[-1]
    err = gaussian_crps(c["mu"], c["sd"], x0, lower=0.0) if rule == "crps" else beta_nll(c["mu"], c["sd"], x0)
    if loss_weight == "masked":
        w = 1 - c["mt"]
        ref = (w * err).sum() / w.sum()
    elif loss_weight == "revealed":
        w = c["mp"] - c["mt"]
        ref = (w * err).sum() / w.sum()
    else:
        ref = (s.pi(c["t"]).float().unsqueeze(1) * (1 - c["mt"]) * err).sum() / (B * G)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # the keyword overrides the config; the random draws are those of the point loss
    other = "beta_nll" if rule == "crps" else "crps"
    training_loss(
        model,
        x0,
        torch.zeros(B, 2),
        s,
        loss_weight=loss_weight,
        likelihood_loss=other,
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(model.calls[-1]["mt"], c["mt"]) and torch.equal(model.calls[-1]["t"], c["t"])
    with pytest.raises(ValueError, match="likelihood_loss"):
        training_loss(model, x0, torch.zeros(B, 2), s, likelihood_loss="mse")


def test_training_loss_backpropagates_into_the_head(make_hinge):
    torch.manual_seed(0)
    model = make_hinge(likelihood="gaussian")
    for rule in ("crps", "beta_nll"):
        model.zero_grad()
        loss = training_loss(
            model,
            torch.rand(8, 12) * 3,
            torch.randn(8, 6),
            likelihood_loss=rule,
            generator=torch.Generator().manual_seed(0),
        )
        loss.backward()
        assert torch.isfinite(loss)
        assert model.std_head.w2.weight.grad.abs().sum() > 0 and model.cond_embed.label[0].weight.grad is not None


# ---------------------------------------------------------------------------------------------------------------
# (b) the sampler draws


def test_one_step_samples_have_the_predicted_distribution(make_hinge):
    """With zero fill and K = 1 every sample of a spot sees the same input, so its draws are i.i.d. from the
    predicted censored Gaussian: their mean and variance must match it (not 0, not σ⁴, not 4σ², ...)."""
    torch.manual_seed(0)
    G, S = 12, 4000
    model = _perturb(make_hinge(n_genes=G, likelihood="gaussian", mask_fill="zero", n_steps=10)).eval()
    cond = torch.randn(1, 6)
    with torch.no_grad():
        mu, sd = model(
            torch.zeros(1, G), torch.tensor([10]), torch.ones(1, G), torch.zeros(1, G), cond, return_std=True
        )
    assert sd.min() < 0.7 and sd.max() > 1.4  # scales far from 1, so σ and σ² differ
    m, v = censored_gaussian_moments(mu[0], sd[0])
    mean, std, samples, var, mix = sample(
        model,
        cond,
        n_steps=1,
        n_samples=S,
        generator=torch.Generator().manual_seed(0),
        return_samples=True,
        return_variance=True,
    )
    # one step: every sample drew from the same distribution, so the mixture's moments are its moments
    torch.testing.assert_close(mix[0], m, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(var[0], v, rtol=1e-4, atol=1e-5)
    assert samples.min() >= 0  # draws are clamped at 0
    se_mean = v.sqrt() / math.sqrt(S)
    assert torch.all((mean[0] - m).abs() < 5 * se_mean + 1e-6)
    # variances where draws are mostly positive (elsewhere they are almost all 0 and the ratio is noise)
    ok = torch.special.ndtr(mu[0] / sd[0]) > 0.25
    assert ok.sum() >= 4 and sd[0][ok].max() / sd[0][ok].min() > 1.5
    rel = std[0][ok] ** 2 / v[ok]
    assert torch.all((rel - 1).abs() < 0.15), rel  # SE of a variance over 4000 draws is ~2-4 %
    torch.testing.assert_close(var[0], v, rtol=1e-5, atol=1e-6)  # mixture variance: all samples share (μ, σ)
    frac0 = (samples[0] == 0).float().mean(0)  # the point mass at 0 is Φ(−μ/σ)
    torch.testing.assert_close(frac0, torch.special.ndtr(-mu[0] / sd[0]), atol=0.03, rtol=0)
    # draw=False turns the gaussian model into the point sampler: every sample is μ
    mean_pt, std_pt = sample(
        model, cond, n_steps=1, n_samples=3, generator=torch.Generator().manual_seed(0), draw=False
    )
    torch.testing.assert_close(mean_pt[0], mu[0])
    torch.testing.assert_close(std_pt, torch.zeros_like(std_pt))


def test_draws_use_the_row_noise_and_later_steps_see_them(gauss_recording_model):
    G, n_spots, S = 10, 3, 2
    model = gauss_recording_model(n_genes=G, n_steps=12)
    g = torch.Generator().manual_seed(5)
    _, _, samples = sample(model, torch.randn(n_spots, 2), n_samples=S, generator=g, return_samples=True)
    final = samples.reshape(-1, G)
    tau, noise, eps = _all_draws(MaskSchedule(G, 12), "gauss", final.shape[0], torch.Generator().manual_seed(5), True)
    tau, steps = tau.long(), sampling_steps(12)
    for call in model.calls:
        t = int(call["t"][0])
        t_next = ([*steps, 0])[steps.index(t) + 1]
        for row in range(call["x_t"].shape[0]):
            hidden = ~call["mt"][row].bool()
            r = int((noise[:, hidden] == call["x_t"][row, hidden]).all(1).nonzero()[0, 0])
            newly = (tau[r] <= t) & (tau[r] > t_next)
            want = (call["mu"][row] + call["sd"][row] * eps[r]).clamp_min(0)
            torch.testing.assert_close(final[r][newly], want[newly])  # a draw with this row's ε, not μ
            vis = call["mt"][row].bool()
            assert torch.equal(call["x_t"][row][vis], final[r][vis])  # earlier draws are what later steps see


class _ChainModel(nn.Module):
    """μ_g = 10 + mean of the visible values − 10 (0 when none), σ = 1: later genes copy earlier draws' noise."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config, self.n_genes = config, config.n_genes
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x_t, t, next_visible, visible, cond, *, return_std=False):
        n = visible.sum(1, keepdim=True)
        mu = 10 + ((x_t - 10) * visible).sum(1, keepdim=True) / n.clamp_min(1)
        return mu.expand_as(x_t), torch.ones_like(x_t)


def test_samples_carry_gene_gene_dependence(gauss_recording_model):
    G = 6
    config = gauss_recording_model(n_genes=G, n_steps=G, schedule="linear").config
    _, _, samples = sample(
        _ChainModel(config),
        torch.zeros(1, 2),
        n_samples=3000,
        generator=torch.Generator().manual_seed(0),
        return_samples=True,
    )
    corr = torch.corrcoef(samples[0].T)
    off = corr[~torch.eye(G, dtype=torch.bool)]
    assert off.mean() > 0.3  # independent per-gene draws would give ~0


@pytest.mark.parametrize(("n_steps", "masking", "fill"), [(None, "exact", "gauss"), (4, "bernoulli", "zero")])
def test_reference_sampler_matches_when_drawing(make_hinge, n_steps, masking, fill):
    torch.manual_seed(0)
    model = _perturb(make_hinge(n_steps=12, masking=masking, mask_fill=fill, likelihood="gaussian")).eval()
    cond = torch.randn(5, 6)

    def kw():
        return dict(n_steps=n_steps, n_samples=3, generator=torch.Generator().manual_seed(2))

    _, _, fast = sample(model, cond, batch_size=4, return_samples=True, **kw())
    ref = sample_reference(model, cond, **kw())
    assert (fast - ref).abs().max().item() <= 1e-4
    _, _, again = sample(model, cond, batch_size=64, return_samples=True, **kw())
    torch.testing.assert_close(fast, again, atol=1e-5, rtol=1e-5)  # any batch size, same draws
    _, _, pt = sample(model, cond, draw=False, return_samples=True, **kw())
    ref_pt = sample_reference(model, cond, draw=False, **kw())
    assert (pt - ref_pt).abs().max().item() <= 1e-4 and not torch.allclose(pt, fast)


def test_drawing_under_bfloat16_autocast(make_hinge):
    torch.manual_seed(0)
    model = _perturb(make_hinge(likelihood="gaussian")).eval()
    cond = torch.randn(3, 6)
    out32 = sample(
        model, cond, n_steps=5, n_samples=2, generator=torch.Generator().manual_seed(0), return_variance=True
    )
    out16 = sample(
        model,
        cond,
        n_steps=5,
        n_samples=2,
        generator=torch.Generator().manual_seed(0),
        return_variance=True,
        autocast=torch.bfloat16,
    )
    for b in out16:  # mean, std, variance, mixture mean
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
    assert (out16[0] - out32[0]).abs().max() < 0.5


def test_point_sampler_variance_is_the_sample_variance_and_draw_needs_gaussian(tiny_hinge):
    model = tiny_hinge.eval()
    cond = torch.randn(3, 6)
    g = torch.Generator().manual_seed(0)
    mean, std, var, mix = sample(model, cond, n_steps=5, n_samples=4, generator=g, return_variance=True)
    torch.testing.assert_close(var, std**2)
    torch.testing.assert_close(mix, mean)
    with pytest.raises(ValueError, match="draw=True"):
        sample(model, cond, draw=True)
    with pytest.raises(ValueError, match="draw=True"):
        sample_reference(model, cond, draw=True)


# ---------------------------------------------------------------------------------------------------------------
# (d) training learns the noise level


@pytest.mark.parametrize("rule", ["crps", "beta_nll"])
def test_training_learns_the_noise_sd(make_hinge, rule):
    """Genes alternate between noise sd 0.15 and 0.6 around a condition-driven mean; after 300 steps each group's
    median predicted σ (masked genes, random t, held-out spots) lies within 30 % of its true sd (measured: within
    ~15 %)."""
    torch.manual_seed(0)
    G, C = 8, 4
    model = make_hinge(n_genes=G, cond_dim=C, n_steps=5, dropout=0.0, likelihood="gaussian", likelihood_loss=rule)
    W = torch.randn(C, G) / C**0.5
    s = torch.tensor([0.15, 0.6] * (G // 2))

    def batch(g, n=64):
        v = torch.randn(n, C, generator=g)
        return 1.5 + 0.5 * torch.tanh(v @ W) + s * torch.randn(n, G, generator=g), v

    g = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.param_groups(), lr=1e-2)
    for _ in range(300):
        x0, v = batch(g)
        loss = training_loss(model, x0, v, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    g = torch.Generator().manual_seed(1)
    x0, v = batch(g, 256)
    schedule = MaskSchedule.from_config(model.config)
    t = schedule.sample_t(256, generator=g)
    visible, next_visible = schedule.masks(t, schedule.reveal_times(256, generator=g))
    with torch.no_grad():
        _, sd = model(
            torch.where(visible.bool(), x0, torch.randn(256, G, generator=g)),
            t,
            next_visible,
            visible,
            v,
            return_std=True,
        )
    hidden = ~visible.bool()
    for k in (0, 1):
        sel = hidden & (torch.arange(G) % 2 == k)
        ratio = (sd[sel].median() / s[k]).item()
        assert 0.7 < ratio < 1.3, (rule, s[k].item(), ratio)


# ---------------------------------------------------------------------------------------------------------------
# (e) save / load, official checkpoints


def test_save_and_from_pretrained_round_trip_with_the_head(tmp_path, make_hinge):
    torch.manual_seed(0)
    model = _perturb(make_hinge(likelihood="gaussian", likelihood_loss="beta_nll")).eval()
    path = tmp_path / "model.pt"
    model.save(path)
    loaded = Hinge.from_pretrained(path).eval()
    assert loaded.config == model.config and loaded.config.likelihood == "gaussian"
    assert loaded.config.likelihood_loss == "beta_nll"
    sd_a, sd_b = model.state_dict(), loaded.state_dict()
    assert sd_a.keys() == sd_b.keys() and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    assert {n for n, p in loaded.named_parameters() if p.requires_grad} == {
        n for n, p in model.named_parameters() if p.requires_grad
    }
    args = _inputs(12, 6, 3, 50, torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(*args, return_std=True), loaded(*args, return_std=True)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    cond = torch.randn(2, 6)
    kw = dict(n_steps=5, n_samples=2, return_samples=True)
    assert torch.equal(
        sample(model, cond, generator=torch.Generator().manual_seed(0), **kw)[2],
        sample(loaded, cond, generator=torch.Generator().manual_seed(0), **kw)[2],
    )


def test_official_checkpoint_loads_as_a_gaussian_model(tmp_path, make_hinge):
    torch.manual_seed(0)
    point = make_hinge(n_layers=2, d_model=32)
    path = tmp_path / "best_weight.pt"
    torch.save({"model": point.state_dict()}, path)
    n_heads = point.backbone_config.n_heads
    ref = load_official_hinge(path, n_heads=n_heads)
    gauss = load_official_hinge(path, n_heads=n_heads, likelihood="gaussian")
    assert gauss.config.likelihood == "gaussian" and not any(p.is_meta for p in gauss.parameters())
    args = _inputs(12, 6, 3, 50, torch.Generator().manual_seed(0))
    with torch.no_grad():
        mu, sd = gauss(*args, return_std=True)
    assert torch.equal(mu, ref(*args))
    torch.testing.assert_close(sd, torch.full_like(sd, INIT_STD))


# ---------------------------------------------------------------------------------------------------------------
# (f) configuration errors


def test_bad_likelihood_config_values_name_the_field():
    with pytest.raises(ValueError, match=r"^likelihood must be one of \('point', 'gaussian'\), got 'poisson'"):
        HingeConfig(n_genes=5, likelihood="poisson")
    with pytest.raises(ValueError, match=r"^likelihood_loss must be one of \('crps', 'beta_nll'\), got 'nll'"):
        HingeConfig(n_genes=5, likelihood="gaussian", likelihood_loss="nll")
    with pytest.raises(ValueError, match="^likelihood_loss"):  # checked for point models too: a typo is a typo
        HingeConfig(n_genes=5, likelihood_loss="CRPS")
    assert HingeConfig(n_genes=5).likelihood == "point"
