"""Gauss-Diff: the DDPM noise schedule, forward noising, posterior, training loss and sampler of a tiny HINGE."""

from __future__ import annotations

import math

import pytest
import torch

from sthinge.models import (
    GaussianSchedule,
    HingeConfig,
    MaskSchedule,
    gaussian_reverse_step,
    gaussian_training_loss,
    sample,
    sample_reference,
    training_loss,
)
from sthinge.models.sampler import sampling_steps


def _gauss_hinge(make_hinge, seed: int = 0, **config):
    torch.manual_seed(seed)
    return make_hinge(**{"objective": "gauss-diff", "n_steps": 10, "dropout": 0.0, **config})


@pytest.mark.parametrize("n_steps", [1, 2, 10, 50, 1000])
def test_schedule_is_nichol_dhariwal_cosine(n_steps):
    s = GaussianSchedule(n_steps)
    ab, beta = s.alpha_bar_table, s.beta_table
    assert ab.dtype == torch.float64 and ab.shape == (n_steps + 1,) and beta.shape == (n_steps + 1,)
    assert ab[0].item() == 1.0 and beta[0].item() == 0.0
    assert 0 < ab[-1].item() <= 1.001e-3  # small but positive: β_T is clipped
    assert torch.all(ab[1:] < ab[:-1])  # strictly decreasing
    assert torch.all(beta[1:] > 0) and torch.all(beta <= 0.999) and beta[-1].item() == pytest.approx(0.999)
    torch.testing.assert_close(ab[1:], torch.cumprod(1 - beta[1:], 0))
    # away from the clip, ᾱ_t = f(t)/f(0) with f(t) = cos²(π/2 · (t/T + s)/(1 + s))
    f = [math.cos(math.pi / 2 * (t / n_steps + 0.008) / 1.008) ** 2 for t in range(n_steps + 1)]
    for t in range(n_steps):
        assert ab[t].item() == pytest.approx(f[t] / f[0], rel=1e-9)
    assert s.alpha_bar(torch.tensor([0, n_steps])).tolist() == [1.0, ab[-1].item()]


def test_schedule_validation_and_config():
    assert GaussianSchedule.from_config(HingeConfig(n_genes=5, n_steps=7)).n_steps == 7
    for bad in ({"n_steps": 0}, {"offset": -1.0}, {"max_beta": 1.0}):
        with pytest.raises(ValueError):
            GaussianSchedule(**bad)
    s = GaussianSchedule(20)
    t = s.sample_t(4000, generator=torch.Generator().manual_seed(0))
    assert t.min() == 1 and t.max() == 20 and t.unique().numel() == 20
    assert s.sample_t(500, generator=torch.Generator().manual_seed(0), t_max=3).max() == 3
    with pytest.raises(ValueError, match="t_max"):
        s.sample_t(3, t_max=21)


def test_forward_noising_statistics():
    s = GaussianSchedule(50)
    g = torch.Generator().manual_seed(0)
    n = 40_000
    for step in (1, 10, 25, 40, 50):
        t = torch.full((n,), step)
        ab = s.alpha_bar(torch.tensor(step)).item()
        x_t = s.q_sample(torch.zeros(n, 1), t, torch.randn(n, 1, generator=g))
        assert x_t.var().item() == pytest.approx(1 - ab, rel=0.03)
        assert abs(x_t.mean().item()) < 4 * math.sqrt((1 - ab) / n)
        # x0 = 1: the mean is √ᾱ_t, the variance still 1 − ᾱ_t
        x_t = s.q_sample(torch.ones(n, 1), t, torch.randn(n, 1, generator=g))
        assert x_t.mean().item() == pytest.approx(math.sqrt(ab), abs=4 * math.sqrt((1 - ab) / n) + 1e-6)
        assert x_t.var().item() == pytest.approx(1 - ab, rel=0.03)


def test_posterior_is_the_ddpm_posterior():
    s = GaussianSchedule(30)
    ab, beta = s.alpha_bar_table, s.beta_table
    for t in range(2, 31):
        c0, ct, var = s.posterior(t, t - 1)
        # Ho et al. (2020), Eq. 7: β̃_t and the two mean coefficients
        assert var == pytest.approx((beta[t] * (1 - ab[t - 1]) / (1 - ab[t])).item(), rel=1e-9)
        assert c0 == pytest.approx((ab[t - 1].sqrt() * beta[t] / (1 - ab[t])).item(), rel=1e-9)
        assert ct == pytest.approx(((1 - beta[t]).sqrt() * (1 - ab[t - 1]) / (1 - ab[t])).item(), rel=1e-9)
    # s = 0: the posterior is x̂₀ itself
    c0, ct, var = s.posterior(5, 0)
    assert c0 == pytest.approx(1.0) and ct == pytest.approx(0.0, abs=1e-12) and var == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError):
        s.posterior(3, 3)
    with pytest.raises(ValueError):
        s.posterior(31, 2)


def test_posterior_jump_is_consistent_with_the_forward_marginals():
    """For a jump t → s the posterior of q(x_t | x_0) mixes back to q(x_s | x_0): check mean and variance."""
    s = GaussianSchedule(40)
    t, r = 30, 12
    ab_t, ab_r = s.alpha_bar_table[t].item(), s.alpha_bar_table[r].item()
    c0, ct, var = s.posterior(t, r)
    x0 = 1.7
    # x_t ~ N(√ᾱ_t x0, 1 − ᾱ_t) → x_r = c0 x0 + ct x_t + √var ε: mean and variance of the mixture
    assert c0 * x0 + ct * math.sqrt(ab_t) * x0 == pytest.approx(math.sqrt(ab_r) * x0, rel=1e-9)
    assert ct**2 * (1 - ab_t) + var == pytest.approx(1 - ab_r, rel=1e-9)
    x_t, x0_hat, noise = torch.randn(3, 4), torch.randn(3, 4), torch.randn(3, 4)
    out = gaussian_reverse_step(s, x_t, x0_hat, t, r, noise)
    torch.testing.assert_close(out, c0 * x0_hat + ct * x_t + math.sqrt(var) * noise)
    assert gaussian_reverse_step(s, x_t, x0_hat, t, 0, None) is x0_hat


def test_config_rejects_gauss_diff_with_a_gaussian_decoder():
    with pytest.raises(ValueError, match="objective.*likelihood"):
        HingeConfig(n_genes=5, objective="gauss-diff", likelihood="gaussian")
    with pytest.raises(ValueError, match="objective"):
        HingeConfig(n_genes=5, objective="ddpm")
    assert HingeConfig(n_genes=5).objective == "mask-diff"
    assert HingeConfig(n_genes=5, objective="gauss-diff").likelihood == "point"


class _Recorder(torch.nn.Module):
    """A Gauss-Diff stand-in that records its inputs and returns x_t·0 + 1."""

    def __init__(self, n_genes: int, n_steps: int = 20) -> None:
        super().__init__()
        self.config = HingeConfig(n_genes=n_genes, cond_dim=2, n_steps=n_steps, objective="gauss-diff")
        self.n_genes = n_genes
        self.dummy = torch.nn.Parameter(torch.zeros(()))
        self.calls: list[tuple] = []

    def forward(self, x_t, t, next_visible, visible, cond):
        self.calls.append((x_t.clone(), t.clone(), next_visible.clone(), visible.clone()))
        return torch.ones_like(x_t)


def test_training_loss_dispatches_and_noises_every_gene():
    model = _Recorder(8)
    x0 = torch.rand(64, 8) + 1
    loss = training_loss(model, x0, torch.zeros(64, 2), generator=torch.Generator().manual_seed(0), t_max=5)
    x_t, t, next_visible, visible = model.calls[-1]
    assert torch.all(visible == 1) and torch.all(next_visible == 1)  # nothing hidden
    assert t.min() >= 1 and t.max() <= 5
    assert loss.item() == pytest.approx(((1 - x0) ** 2).mean().item(), rel=1e-6)
    # x_t is the forward noising of x0 with the same draws as the Gauss-Diff loss itself
    g = torch.Generator().manual_seed(0)
    s = GaussianSchedule(20)
    t_ref = s.sample_t(64, generator=g, t_max=5)
    eps = torch.randn(64, 8, generator=g)
    assert torch.equal(t, t_ref)
    torch.testing.assert_close(x_t, s.q_sample(x0, t_ref, eps))
    assert not torch.all(x_t[:, 0] == x0[:, 0])  # every gene is noised
    # the masking schedule the training loop passes is accepted; loss_weight does not apply
    again = training_loss(
        model, x0, torch.zeros(64, 2), MaskSchedule(8, 20), generator=torch.Generator().manual_seed(0), t_max=5
    )
    assert again.item() == loss.item()
    with pytest.raises(ValueError, match="T=20"):
        training_loss(model, x0, torch.zeros(64, 2), MaskSchedule(8, 10))
    direct = gaussian_training_loss(model, x0, torch.zeros(64, 2), generator=torch.Generator().manual_seed(0), t_max=5)
    assert direct.item() == loss.item()


def test_gauss_diff_hinge_learns_on_a_fixed_batch(make_hinge):
    G, C = 12, 6
    model = _gauss_hinge(make_hinge, n_genes=G, cond_dim=C)
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(32, C, generator=g)
    x0 = (cond @ torch.randn(C, G, generator=g) / 2 + 2).clamp_min(0)

    def fixed_loss():
        model.eval()
        with torch.no_grad():
            return training_loss(model, x0, cond, generator=torch.Generator().manual_seed(7)).item()

    before = fixed_loss()
    opt = torch.optim.Adam(model.trainable_parameters(), lr=3e-3)
    model.train()
    for step in range(50):
        loss = training_loss(model, x0, cond, generator=torch.Generator().manual_seed(100 + step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.train()
    after = fixed_loss()
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize("n_steps", [None, 3])
def test_sampler_is_seeded_batch_size_independent_and_matches_the_reference(make_hinge, n_steps):
    model = _gauss_hinge(make_hinge, n_genes=7, cond_dim=3).eval()
    cond = torch.randn(5, 3, generator=torch.Generator().manual_seed(2))

    def run(batch_size, seed=0, **kw):
        return sample(
            model,
            cond,
            n_steps=n_steps,
            n_samples=3,
            batch_size=batch_size,
            generator=torch.Generator().manual_seed(seed),
            return_samples=True,
            **kw,
        )

    mean, std, samples = run(4)
    again = run(4)
    assert all(torch.equal(a, b) for a, b in zip((mean, std, samples), again))
    other = run(64)
    torch.testing.assert_close(samples, other[2], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(samples, run(4, seed=1)[2])
    assert samples.shape == (5, 3, 7) and torch.all(samples >= 0)
    torch.testing.assert_close(mean, samples.mean(1))
    torch.testing.assert_close(std, samples.std(1, correction=0))
    assert (std > 0).float().mean() > 0.5  # different noise per sample (genes predicted below 0 clamp to 0)
    ref = sample_reference(model, cond, n_steps=n_steps, n_samples=3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(samples, ref, rtol=1e-5, atol=1e-5)
    # the tuple structure of the masked sampler, with variance = std² and mixture_mean = mean
    *_, variance, mixture_mean = run(4, return_variance=True)
    torch.testing.assert_close(variance, std**2)
    torch.testing.assert_close(mixture_mean, mean)
    assert len(run(4, return_variance=True)) == 5
    assert len(sample(model, cond, n_steps=n_steps, generator=torch.Generator().manual_seed(0))) == 2
    with pytest.raises(ValueError, match="draw=True"):
        sample(model, cond, draw=True)
    with pytest.raises(ValueError, match="draw=True"):
        sample_reference(model, cond, draw=True)


def test_sampler_calls_the_model_with_every_gene_visible_at_the_chosen_steps():
    model = _Recorder(6, n_steps=20)
    cond = torch.zeros(4, 2)
    _, _, samples = sample(
        model,
        cond,
        n_steps=5,
        n_samples=2,
        batch_size=2,
        generator=torch.Generator().manual_seed(0),
        return_samples=True,
    )
    steps = [int(c[1][0]) for c in model.calls]
    assert steps == [t for t in sampling_steps(20, 5) for _ in range(4)]  # 4 batches of 2 rows per step
    assert all(torch.all(c[2] == 1) and torch.all(c[3] == 1) for c in model.calls)
    # the first call sees x_T ~ N(0, I); the model predicts x̂₀ = 1, which the last step returns
    torch.testing.assert_close(samples, torch.ones(4, 2, 6))
    x_T = torch.cat([c[0] for c in model.calls[:4]])
    torch.testing.assert_close(x_T, torch.randn(8, 6, generator=torch.Generator().manual_seed(0)))
