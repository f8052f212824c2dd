"""Which scoring rule trains ``HingeConfig(likelihood="gaussian")`` best: CRPS or β-NLL (CPU, minutes).

Synthetic spots with a known answer: C histology features v ~ N(0, I); gene g has mean f_g(v) = a + 0.8 tanh(w_g·v)
and heteroscedastic noise sd s_g(v) = 0.1 + 0.5 σ(2 u_g·v), independent over genes, so the best predictive of a gene
given v *and any other genes* is N(f_g, s_g²) (dataset ``gauss``, a = 1.5: no zeros) or its censoring at 0
(dataset ``zeros``: x = max(0, f + s ε), a = 0.3, a third exact zeros, like sparse log1p expression). A tiny
HINGE (2 layers, D = 32, G = 16, C = 8, T = 10, frozen random backbone) is trained for ``--steps`` steps on fresh
batches of 64 with each loss (and the point model for reference), then scored on 256 held-out spots:

* ``sd ratio``: median of σ/s over masked genes at random t (decoder level; 1 = calibrated), and ``|log ratio|``,
  the mean of |log(σ/s)|;
* ``mean MSE``: mean (μ − f)² (x̂₀ − f for the point model) over those genes, against the noise-free mean
  (``gauss`` only);
* ``cover90``: share of held-out observations whose randomised PIT among ``--samples`` sampler draws lies in
  [0.05, 0.95], i.e. inside the central 90 % predictive interval (0.90 = calibrated, for any number of draws);
  ``CRPS``: unbiased sample CRPS of the draws (lower is better).

``crps-plain`` is the uncensored Gaussian CRPS (the library trains the censored one), to show what censoring buys.

    PYTHONPATH=src python benchmarks/bench_likelihood.py [--steps 400] [--seeds 0 1] [--samples 32] [--threads 1]

Measured on 2 shared CPU cores, seeds 0 1 2, 32 draws (mean over seeds; ``--steps 1500``, and 400 in brackets):

| data | loss | sd ratio | abs log ratio | mean MSE | cover90 | CRPS |
|---|---|---|---|---|---|---|
| gauss | point | | | 0.008 (0.037) | 0.138 (0.167) | 0.278 (0.304) |
| gauss | crps | 1.019 (0.986) | 0.174 (0.308) | 0.007 (0.019) | 0.891 (0.867) | 0.209 (0.221) |
| gauss | beta_nll | 1.041 (1.111) | 0.135 (0.287) | 0.008 (0.026) | 0.898 (0.897) | 0.209 (0.225) |
| zeros | point | | | | 0.138 (0.157) | 0.199 (0.206) |
| zeros | crps | 1.015 (1.101) | 0.175 (0.259) | | 0.890 (0.906) | 0.137 (0.142) |
| zeros | beta_nll | 0.810 (0.816) | 0.432 (0.412) | | 0.864 (0.853) | 0.144 (0.153) |
| zeros | crps-plain | 0.792 (0.758) | 0.673 (0.590) | | 0.833 (0.841) | 0.142 (0.148) |

Without zeros the two rules end level (β-NLL tracks σ a little closer, CRPS fits the mean faster); with zeros the
censored CRPS is the only one that stays calibrated, hence ``likelihood_loss="crps"`` is the default.
"""

from __future__ import annotations

import argparse
import time
from unittest import mock

import torch

from sthinge.models import CellFM, Hinge, HingeConfig, MaskSchedule, sample, training_loss
from sthinge.models import diffusion as _diffusion
from sthinge.models.likelihood import gaussian_crps

G, C, T, BATCH, N_EVAL = 16, 8, 10, 64, 256


def make_task(seed: int, zeros: bool):
    g = torch.Generator().manual_seed(1000 + seed)
    W, U = torch.randn(C, G, generator=g) / C**0.5, torch.randn(C, G, generator=g) / C**0.5
    a = 0.3 if zeros else 1.5

    def draw(n: int, gen: torch.Generator):
        v = torch.randn(n, C, generator=gen)
        f, s = a + 0.8 * torch.tanh(v @ W), 0.1 + 0.5 * torch.sigmoid(2 * v @ U)
        x = f + s * torch.randn(n, G, generator=gen)
        return (x.clamp_min(0) if zeros else x), v, f, s

    return draw


def make_model(seed: int, likelihood: str, loss: str) -> Hinge:
    torch.manual_seed(seed)
    backbone = CellFM.from_preset("tiny", n_layers=2, d_model=32, vocab_size=100, n_bins=16)
    cfg = HingeConfig(n_genes=G, cond_dim=C, n_steps=T, dropout=0.0, likelihood=likelihood, likelihood_loss=loss)
    return Hinge(backbone, torch.arange(1, G + 1), cfg)


def train(model: Hinge, draw, steps: int, seed: int, plain: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.param_groups(), lr=3e-3)
    crps = (lambda m, s, x, lower=None: gaussian_crps(m, s, x)) if plain else gaussian_crps
    with mock.patch.object(_diffusion, "gaussian_crps", crps):
        for _ in range(steps):
            x0, v, _, _ = draw(BATCH, g)
            loss = training_loss(model, x0, v, generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def evaluate(model: Hinge, draw, n_samples: int, zeros: bool) -> dict[str, float]:
    model.eval()
    g = torch.Generator().manual_seed(99)
    x0, v, f, s = draw(N_EVAL, g)
    res: dict[str, float] = {}
    schedule = MaskSchedule.from_config(model.config)
    t = schedule.sample_t(N_EVAL, generator=g)
    visible, next_visible = schedule.masks(t, schedule.reveal_times(N_EVAL, generator=g))
    x_t = torch.where(visible.bool(), x0, torch.randn(N_EVAL, G, generator=g))
    hidden = ~visible.bool()
    if model.config.likelihood == "gaussian":
        mu, sigma = model(x_t, t, next_visible, visible, v, return_std=True)
        ratio = (sigma / s)[hidden]
        res["sd ratio"] = ratio.median().item()
        res["|log ratio|"] = ratio.log().abs().mean().item()
    else:
        mu = model(x_t, t, next_visible, visible, v)
    if not zeros:
        res["mean MSE"] = ((mu - f) ** 2)[hidden].mean().item()
    _, _, samples = sample(model, v, n_samples=n_samples, generator=g, return_samples=True, batch_size=4096)
    # randomised PIT of each observation among its S draws (ties, e.g. at 0, broken at random): uniform on [0, 1]
    # exactly when the draws come from the observation's distribution, so the 90 % coverage is 0.90 for any S
    y = x0.unsqueeze(1)
    below, ties = (samples < y).sum(1), (samples == y).sum(1)
    pit = (below + torch.rand(below.shape, generator=g) * (ties + 1)) / (n_samples + 1)
    res["cover90"] = ((pit >= 0.05) & (pit <= 0.95)).float().mean().item()
    # unbiased sample CRPS: E|X - y| - ½ E|X - X'| over pairs of different draws
    e1 = (samples - y).abs().mean(1)
    e2 = (samples.unsqueeze(1) - samples.unsqueeze(2)).abs().sum((1, 2)) / (n_samples * (n_samples - 1))
    res["CRPS"] = (e1 - 0.5 * e2).mean().item()
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = [
        ("point", "point", "crps", False),
        ("crps", "gaussian", "crps", False),
        ("beta_nll", "gaussian", "beta_nll", False),
        ("crps-plain", "gaussian", "crps", True),
    ]
    cols = ["sd ratio", "|log ratio|", "mean MSE", "cover90", "CRPS"]
    print(f"{args.steps} steps x batch {BATCH}, seeds {args.seeds}, {args.samples} samples; mean over seeds\n")
    print("| data | loss | " + " | ".join(cols) + " | s/run |")
    print("|---" * (len(cols) + 3) + "|")
    for data in ("gauss", "zeros"):
        for name, likelihood, loss, plain in runs:
            if plain and data == "gauss":
                continue  # censoring changes nothing without zeros
            acc: dict[str, list[float]] = {}
            t0 = time.perf_counter()
            for seed in args.seeds:
                draw = make_task(seed, data == "zeros")
                model = make_model(seed, likelihood, loss)
                train(model, draw, args.steps, seed, plain)
                for k, val in evaluate(model, draw, args.samples, data == "zeros").items():
                    acc.setdefault(k, []).append(val)
            sec = (time.perf_counter() - t0) / len(args.seeds)
            cells = [f"{sum(acc[c]) / len(acc[c]):.3f}" if c in acc else "" for c in cols]
            print(f"| {data} | {name} | " + " | ".join(cells) + f" | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
