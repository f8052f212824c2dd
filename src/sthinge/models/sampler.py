"""Ancestral sampling of a trained HINGE model (paper §3.2 "Inference"; see Method, :ref:`method-sampler`).

Per spot and sample the whole reveal order is drawn first (reveal times τ, :meth:`MaskSchedule.reveal_times`)
together with one fill draw for the masked entries. With a budget of K ≤ T steps, K timesteps
t_1 = T > … > t_K ≥ 1 are spread evenly over T..1; the call at t_k sees m_{t_k} = [τ > t_k], gets
m_{t_{k+1}} = [τ > t_{k+1}] (t_{K+1} = 0) as "next visibility", and writes x̂₀ into every gene whose reveal
time falls in (t_{k+1}, t_k]. K = T is exactly the full ancestral sampler, any K ends fully revealed, and
revealed values are never changed. Steps at which no gene is revealed are skipped, and only rows that reveal
something are sent through the model; when every row reveals something (always so with exact-count masking)
the batch goes through as it is, without gathering rows.

Likelihoods. For ``likelihood="point"`` models (the paper's) the value written into a revealed gene is x̂₀, the
model's conditional mean, so the spread over samples only reflects reveal orders and fill noise. For
``likelihood="gaussian"`` models it is a *draw* max(0, μ + σ ε) from the predicted Gaussian censored at 0, with one
ε ~ N(0, 1) per row and gene drawn up front with the reveal times and fill values; later steps see the drawn values
as they see any revealed value, so a sample is a joint draw over genes (gene–gene dependence included) and the
spread over samples is the model's predictive uncertainty. ``draw=False`` gives a Gaussian model the point sampler.

The model is called with rows = spots × samples, so the condition path runs once per spot, sample and step
(never per gene). :func:`sample_reference` is the deliberately plain version (every chosen step, every row,
float32, no skipping) with the same draws, used to check :func:`sample`.

Gauss-Diff. For a model with ``config.objective == "gauss-diff"`` (the paper's Gaussian-diffusion ablation, see
:mod:`sthinge.models.gaussian_diffusion`) both samplers run DDPM ancestral sampling instead: x_T ~ N(0, I) for every
row and gene, then at each chosen step t_k the model (every gene visible) predicts x̂₀ and x_{t_{k+1}} is drawn from
the posterior q(x_{t_{k+1}} | x_{t_k}, x̂₀) (a jump when the budget K < T skips steps); the last step returns x̂₀.
The starting noise and each step's noise are drawn for all rows at once on the generator's device, step by step, so
the same seed gives the same samples for any ``batch_size`` (the loop runs over steps, then over row batches). The
final samples are clamped at 0, since expression is non-negative log-normalised.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from sthinge.models.diffusion import MaskSchedule, fill_values
from sthinge.models.gaussian_diffusion import GaussianSchedule, as_gaussian_schedule, gaussian_reverse_step
from sthinge.models.likelihood import censored_gaussian_moments

__all__ = ["auto_batch_size", "sample", "sample_reference", "sampling_steps"]


def sampling_steps(n_steps: int, budget: int | None = None) -> list[int]:
    """The K = ``budget`` timesteps (default T) spread evenly from T down to 1, strictly decreasing.

    Parameters
    ----------
    n_steps
        T.
    budget
        K, 1 ≤ K ≤ T.

    Returns
    -------
    list of int
        [T, …, 1] for K = T; [T] for K = 1.
    """
    K = n_steps if budget is None else budget
    if not 1 <= K <= n_steps:
        raise ValueError(f"n_steps (the budget K) must lie in 1..{n_steps}, got {budget}")
    if K == 1:
        return [n_steps]
    return [math.floor(n_steps - k * (n_steps - 1) / (K - 1) + 0.5) for k in range(K)]


#: On a CPU, rows per model call are chosen so that one token tensor (rows x (G + 1) x D float32) stays within this
#: many bytes: larger tensors fall out of the caches, and above glibc's 32 MB mmap threshold every element-wise
#: operation page-faults its output in anew (measured in docs/benchmarks.md, summary of 2026-11-26).
CPU_TOKEN_BYTES = 8 * 2**20


def auto_batch_size(model: nn.Module, device: torch.device | str | None = None) -> int:
    """Rows (spots x samples) per model call when the caller does not choose.

    Parameters
    ----------
    model
        A :class:`~sthinge.models.hinge.Hinge` (its gene count and backbone width are used).
    device
        Where it runs (default: where its parameters are).

    Returns
    -------
    int
        256 on an accelerator. On a CPU the largest power of two from 16 to 256 whose token tensor
        (rows x (G + 1) x D float32) fits in :data:`CPU_TOKEN_BYTES`: 256 for small models and panels, 16 at the
        800M width.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    width = getattr(getattr(model, "backbone_config", None), "d_model", None)
    if device.type != "cpu" or width is None:
        return 256
    per_row = (model.n_genes + 1) * width * 4
    rows = 16
    while rows < 256 and 2 * rows * per_row <= CPU_TOKEN_BYTES:
        rows *= 2
    return rows


def _resolve(model: nn.Module, cond: Tensor, schedule: MaskSchedule | None, n_samples: int) -> MaskSchedule:
    if cond.dim() != 2:
        raise ValueError(f"cond must have shape (n_spots, C), got {tuple(cond.shape)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    schedule = schedule or MaskSchedule.from_config(model.config)
    if schedule.n_genes != model.n_genes:
        raise ValueError(f"schedule has {schedule.n_genes} genes, the model {model.n_genes}")
    return schedule


def _draws(schedule: MaskSchedule, fill: str, n_rows: int, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Reveal times (rows, G) uint8/int16 and fill values (rows, G) for all rows, drawn once on the generator's
    device (CPU unless the generator lives elsewhere): the same seed gives the same draws for any batch size."""
    device = generator.device if generator is not None else "cpu"
    tau = schedule.reveal_times(n_rows, generator=generator, device=device)
    tau = tau.to(torch.uint8 if schedule.n_steps < 256 else torch.int16)
    noise = fill_values((n_rows, schedule.n_genes), fill, generator=generator, device=device)
    return tau, noise


def _all_draws(
    schedule: MaskSchedule, fill: str, n_rows: int, generator: torch.Generator | None, draw: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """:func:`_draws` and, when drawing, then the standard normal ε (rows, G) of the Gaussian draws (same device
    rule). Without ``draw`` nothing more is drawn than for a point model (same generator state afterwards)."""
    tau, noise = _draws(schedule, fill, n_rows, generator)
    if not draw:
        return tau, noise, None
    device = generator.device if generator is not None else "cpu"
    return tau, noise, fill_values((n_rows, schedule.n_genes), "gauss", generator=generator, device=device)


def _resolve_draw(model: nn.Module, draw: bool | None) -> bool:
    gaussian = getattr(model.config, "likelihood", "point") == "gaussian"
    if draw is None:
        return gaussian
    if draw and not gaussian:
        raise ValueError("draw=True needs a model with likelihood='gaussian' (this one predicts a point x̂₀)")
    return bool(draw)


def _is_gauss_diff(model: nn.Module) -> bool:
    return getattr(model.config, "objective", "mask-diff") == "gauss-diff"


def _resolve_gauss(
    model: nn.Module, cond: Tensor, schedule: MaskSchedule | GaussianSchedule | None, n_samples: int
) -> GaussianSchedule:
    if cond.dim() != 2:
        raise ValueError(f"cond must have shape (n_spots, C), got {tuple(cond.shape)}")
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    return as_gaussian_schedule(schedule, model.config)


def _gauss_noise(n_rows: int, n_genes: int, generator: torch.Generator | None) -> Tensor:
    """(rows, G) standard normal draws for all rows at once, on the generator's device (CPU unless it lives
    elsewhere): x_T and each step's noise of the Gauss-Diff samplers, in the same order in both."""
    device = generator.device if generator is not None else "cpu"
    return fill_values((n_rows, n_genes), "gauss", generator=generator, device=device)


def _sample_gauss(
    model: nn.Module,
    cond: Tensor,
    *,
    schedule: MaskSchedule | GaussianSchedule | None,
    n_steps: int | None,
    n_samples: int,
    batch_size: int | None,
    generator: torch.Generator | None,
    return_samples: bool,
    autocast: torch.dtype | None,
    progress: bool,
    draw: bool | None,
    return_variance: bool,
) -> tuple[Tensor, ...]:
    """:func:`sample` for a Gauss-Diff model (DDPM ancestral sampling, see the module docstring)."""
    schedule = _resolve_gauss(model, cond, schedule, n_samples)
    _resolve_draw(model, draw)  # a point model: draw=True is refused as for any point model
    steps = sampling_steps(schedule.n_steps, n_steps)
    bounds = list(zip(steps, [*steps[1:], 0]))  # (t_k, t_{k+1})
    device = next(model.parameters()).device
    n_spots, G = cond.shape[0], model.n_genes
    n_rows = n_spots * n_samples
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    if batch_size is None:
        batch_size = auto_batch_size(model, device)
    batches = list(_batches(n_spots, n_samples, batch_size))
    x = _gauss_noise(n_rows, G, generator).to(device)  # (R, G) x_T
    x0_hat = torch.empty_like(x)
    ones = torch.ones(max((stop - start for start, stop in batches), default=0) * n_samples, G, device=device)
    for t_k, t_next in _progress(bounds, progress, len(bounds)):
        for start, stop in batches:
            rows = slice(start * n_samples, stop * n_samples)
            n = (stop - start) * n_samples
            c = cond[start:stop].to(device).repeat_interleave(n_samples, dim=0)  # (r, C)
            t = torch.full((n,), t_k, dtype=torch.long, device=device)
            with amp:
                x0_hat[rows] = model(x[rows], t, ones[:n], ones[:n], c).float()
        noise = _gauss_noise(n_rows, G, generator).to(device) if t_next > 0 else None
        x = gaussian_reverse_step(schedule, x, x0_hat, t_k, t_next, noise)
    out = x.clamp_min(0).view(n_spots, n_samples, G).to(cond.device)
    mean = out.mean(dim=1)
    std = out.std(dim=1, correction=0)
    result = (mean, std, out) if return_samples else (mean, std)
    return (*result, std**2, mean) if return_variance else result


def _predict(model: nn.Module, args: tuple[Tensor, ...], draw: bool) -> tuple[Tensor, Tensor | None]:
    """(μ float32, σ float32) for a drawing sampler, (x̂₀ float32, None) otherwise."""
    if not draw:
        return model(*args).float(), None
    mean, std = model(*args, return_std=True)
    return mean.float(), std.float()


def _batches(n_spots: int, n_samples: int, batch_size: int) -> Iterator[tuple[int, int]]:
    per = max(1, batch_size // n_samples)  # whole spots per model call
    for start in range(0, n_spots, per):
        yield start, min(n_spots, start + per)


def _progress(iterable, enabled: bool, total: int):
    if not enabled:
        return iterable
    from sthinge._logging import progress

    return progress(iterable, desc="sampling", total=total)


@torch.inference_mode()
def sample(
    model: nn.Module,
    cond: Tensor,
    *,
    schedule: MaskSchedule | None = None,
    n_steps: int | None = None,
    n_samples: int = 1,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    return_samples: bool = False,
    autocast: torch.dtype | None = None,
    progress: bool = False,
    draw: bool | None = None,
    return_variance: bool = False,
) -> tuple[Tensor, ...]:
    """Sample expression for each spot from its histology features.

    Parameters
    ----------
    model
        A trained :class:`~sthinge.models.hinge.Hinge` (put in eval mode by the caller).
    cond
        (n_spots, C) histology features.
    schedule
        Masking schedule (default: the model's, ``MaskSchedule.from_config(model.config)``). For a Gauss-Diff model
        (``config.objective == "gauss-diff"``) a :class:`~sthinge.models.gaussian_diffusion.GaussianSchedule`, or
        None or the model's masking schedule for the model's own noise schedule.
    n_steps
        Step budget K ≤ T (default T: the full ancestral sampler).
    n_samples
        Independent samples per spot (different reveal orders, fill noise and, when drawing, draws).
    batch_size
        Rows (spots × samples) per model call; whole spots are kept together. Default: :func:`auto_batch_size`.
    generator
        Random generator; the same seed gives the same samples (for any ``batch_size``).
    return_samples
        Also return all samples.
    autocast
        Run the model under ``torch.autocast`` with this dtype (e.g. ``torch.bfloat16``).
    progress
        Show a progress bar over spot batches.
    draw
        Write draws max(0, μ + σ ε) into revealed genes (default for ``likelihood="gaussian"`` models) or the
        predicted mean (``False``; the only choice, and the default, for ``likelihood="point"``, Gauss-Diff
        models included).
    return_variance
        Also return the mixture-consistent predictive variance and mean (the last two elements of the result).

    Returns
    -------
    mean
        (n_spots, G) float32 mean over samples (the prediction).
    std
        (n_spots, G) float32 standard deviation over samples (0 for one sample).
    samples
        (n_spots, n_samples, G), only with ``return_samples``.
    variance
        (n_spots, G) float32, only with ``return_variance``: the variance of the predictive mixture
        (1/S) Σ_s F_s, where F_s is the distribution gene g was drawn from in sample s (given that sample's reveal
        order, fill and earlier draws): mean_s v_s + var_s m_s, with (m_s, v_s) the mean and variance of
        max(0, N(μ_s, σ_s²)) (law of total variance). It estimates the same predictive variance as ``std²``, with
        less Monte-Carlo noise (Rao–Blackwellised: each sample's own draw noise is integrated out in closed form);
        for a point model, or ``draw=False``, v_s = 0, m_s = x̂₀ and it equals ``std²``.
    mixture_mean
        (n_spots, G) float32, only with ``return_variance``: mean_s m_s, the mean of that mixture. It estimates the
        same predictive mean as ``mean`` without the draws' own noise (equal to ``mean`` for a point model).

        For a Gauss-Diff model the samples are DDPM draws clamped at 0 (see the module docstring), ``variance`` is
        ``std²`` and ``mixture_mean`` is ``mean``.
    """
    if _is_gauss_diff(model):
        return _sample_gauss(
            model,
            cond,
            schedule=schedule,
            n_steps=n_steps,
            n_samples=n_samples,
            batch_size=batch_size,
            generator=generator,
            return_samples=return_samples,
            autocast=autocast,
            progress=progress,
            draw=draw,
            return_variance=return_variance,
        )
    schedule = _resolve(model, cond, schedule, n_samples)
    draw = _resolve_draw(model, draw)
    steps = sampling_steps(schedule.n_steps, n_steps)
    bounds = list(zip(steps, [*steps[1:], 0]))  # (t_k, t_{k+1})
    device = next(model.parameters()).device
    n_spots, G = cond.shape[0], schedule.n_genes
    tau_all, noise_all, eps_all = _all_draws(schedule, model.config.mask_fill, n_spots * n_samples, generator, draw)
    amp = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
    out = torch.empty(n_spots, n_samples, G, dtype=torch.float32, device=cond.device)
    variance = torch.empty(n_spots, G, dtype=torch.float32, device=cond.device) if return_variance else None
    mixture_mean = torch.empty(n_spots, G, dtype=torch.float32, device=cond.device) if return_variance else None
    if batch_size is None:
        batch_size = auto_batch_size(model, device)
    batches = list(_batches(n_spots, n_samples, batch_size))
    for start, stop in _progress(batches, progress, len(batches)):
        rows = slice(start * n_samples, stop * n_samples)
        tau = tau_all[rows].to(device).long()  # (R, G)
        x = noise_all[rows].to(device, copy=True)  # (R, G): fill values until revealed
        c = cond[start:stop].to(device).repeat_interleave(n_samples, dim=0)  # (R, C)
        eps = eps_all[rows].to(device) if draw else None
        if return_variance:  # mean and variance of the distribution each gene was drawn from
            cm, cv = torch.zeros_like(x), torch.zeros_like(x)
        for t_k, t_next in bounds:
            reveal = (tau <= t_k) & (tau > t_next)  # (R, G)
            any_row = reveal.any(dim=1)
            n_active = int(any_row.sum())
            if n_active == 0:  # no gene is revealed at this step: the call would be thrown away
                continue
            # only the rows that reveal something go through the model; when all do (always so with exact-count
            # masking) a slice selects them as views, without gathering copies
            sel = slice(None) if n_active == any_row.numel() else any_row.nonzero().squeeze(1)
            tau_a = tau[sel]
            visible = (tau_a > t_k).float()
            next_visible = (tau_a > t_next).float()
            t = torch.full((n_active,), t_k, dtype=torch.long, device=device)
            with amp:
                mu, sigma = _predict(model, (x[sel], t, next_visible, visible, c[sel]), draw)  # (A, G) each
            new = (mu + sigma * eps[sel]).clamp_min(0) if draw else mu
            x[sel] = torch.where(reveal[sel], new, x[sel])
            if return_variance:
                m, v = censored_gaussian_moments(mu, sigma) if draw else (mu, torch.zeros_like(mu))
                cm[sel] = torch.where(reveal[sel], m, cm[sel])
                cv[sel] = torch.where(reveal[sel], v, cv[sel])
        out[start:stop] = x.view(stop - start, n_samples, G).to(out.device)
        if return_variance:
            cm, cv = cm.view(stop - start, n_samples, G), cv.view(stop - start, n_samples, G)
            variance[start:stop] = (cv.mean(dim=1) + cm.var(dim=1, correction=0)).to(variance.device)
            mixture_mean[start:stop] = cm.mean(dim=1).to(mixture_mean.device)
    mean = out.mean(dim=1)
    std = out.std(dim=1, correction=0)
    result = (mean, std, out) if return_samples else (mean, std)
    return (*result, variance, mixture_mean) if return_variance else result


@torch.inference_mode()
def sample_reference(
    model: nn.Module,
    cond: Tensor,
    *,
    schedule: MaskSchedule | None = None,
    n_steps: int | None = None,
    n_samples: int = 1,
    generator: torch.Generator | None = None,
    draw: bool | None = None,
) -> Tensor:
    """Plain reference sampler: the paper's loop, every chosen step, every row, float32, no skipping.

    Uses the same draws as :func:`sample` for the same generator state: x_T = fill, then for each chosen step
    x̂₀ = f(x_t, t, m_next, m_t, v), x̃₀ = m_t ⊙ x_t + (1 − m_t) ⊙ x̂₀, x_next = m_next ⊙ x̃₀ + (1 − m_next) ⊙ fill.
    When drawing (``likelihood="gaussian"``), x̂₀ is replaced by the draw max(0, μ + σ ε) with the row's ε.

    For a Gauss-Diff model: x_T = N(0, I) noise, then for each chosen step x̂₀ = f(x_t, t, 1, 1, v) and
    x_next = √ᾱ_next(1 − ᾱ_{t|next})/(1 − ᾱ_t) x̂₀ + √ᾱ_{t|next}(1 − ᾱ_next)/(1 − ᾱ_t) x_t + σ ε, written out here
    (x̂₀ at the last step), clamped at 0 at the end; the same draws as :func:`sample`.

    Parameters
    ----------
    model, cond, schedule, n_steps, n_samples, generator, draw
        As in :func:`sample`.

    Returns
    -------
    (n_spots, n_samples, G) samples.
    """
    if _is_gauss_diff(model):
        return _sample_reference_gauss(model, cond, schedule, n_steps, n_samples, generator, draw)
    schedule = _resolve(model, cond, schedule, n_samples)
    draw = _resolve_draw(model, draw)
    steps = sampling_steps(schedule.n_steps, n_steps)
    device = next(model.parameters()).device
    n_spots, G = cond.shape[0], schedule.n_genes
    tau, noise, eps = _all_draws(schedule, model.config.mask_fill, n_spots * n_samples, generator, draw)
    tau, noise = tau.to(device).long(), noise.to(device)
    c = cond.to(device).repeat_interleave(n_samples, dim=0)
    x = noise.clone()
    for k, t_k in enumerate(steps):
        t_next = steps[k + 1] if k + 1 < len(steps) else 0
        m_t = (tau > t_k).float()
        m_next = (tau > t_next).float()
        t = torch.full((x.shape[0],), t_k, dtype=torch.long, device=device)
        if draw:
            mu, sigma = model(x, t, m_next, m_t, c, return_std=True)
            x0_hat = (mu.float() + sigma.float() * eps.to(device)).clamp_min(0)
        else:
            x0_hat = model(x, t, m_next, m_t, c).float()
        x0_tilde = m_t * x + (1 - m_t) * x0_hat
        x = m_next * x0_tilde + (1 - m_next) * noise
    return x.view(n_spots, n_samples, G)


def _sample_reference_gauss(
    model: nn.Module,
    cond: Tensor,
    schedule: MaskSchedule | GaussianSchedule | None,
    n_steps: int | None,
    n_samples: int,
    generator: torch.Generator | None,
    draw: bool | None,
) -> Tensor:
    """:func:`sample_reference` for a Gauss-Diff model: every row at once, the posterior written out."""
    schedule = _resolve_gauss(model, cond, schedule, n_samples)
    _resolve_draw(model, draw)
    steps = sampling_steps(schedule.n_steps, n_steps)
    device = next(model.parameters()).device
    n_spots, G = cond.shape[0], model.n_genes
    n_rows = n_spots * n_samples
    ab = schedule.alpha_bar_table.tolist()
    c = cond.to(device).repeat_interleave(n_samples, dim=0)
    ones = torch.ones(n_rows, G, device=device)
    x = _gauss_noise(n_rows, G, generator).to(device)
    for k, t_k in enumerate(steps):
        t_next = steps[k + 1] if k + 1 < len(steps) else 0
        t = torch.full((n_rows,), t_k, dtype=torch.long, device=device)
        x0_hat = model(x, t, ones, ones, c).float()
        if t_next == 0:
            x = x0_hat
            continue
        a_t, a_s = ab[t_k], ab[t_next]
        a_ts = a_t / a_s
        mean = math.sqrt(a_s) * (1 - a_ts) / (1 - a_t) * x0_hat + math.sqrt(a_ts) * (1 - a_s) / (1 - a_t) * x
        std = math.sqrt((1 - a_ts) * (1 - a_s) / (1 - a_t))
        x = mean + std * _gauss_noise(n_rows, G, generator).to(device)
    return x.clamp_min(0).view(n_spots, n_samples, G)
