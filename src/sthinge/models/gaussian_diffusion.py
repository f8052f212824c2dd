"""Gauss-Diff: Gaussian (DDPM) diffusion over all genes on the HINGE architecture (the paper's Table 3 ablation).

The paper compares HINGE's masked diffusion with a Gaussian diffusion over the same genes, the same frozen backbone
and the same SoftAdaLN (``HingeConfig(objective="gauss-diff")``). sthinge's reading of that objective is DDPM
(Ho et al. 2020) with x₀-prediction: the HINGE decoder outputs x̂₀.

* Noise schedule (:class:`GaussianSchedule`): the cosine schedule of Nichol & Dhariwal (2021),
  f(t) = cos²(π/2 · (t/T + s)/(1 + s)) with offset s = 0.008, β_t = min(1 − f(t)/f(t−1), 0.999) and
  ᾱ_t = Π_{i≤t} (1 − β_i) for t = 0..T (ᾱ_0 = 1; ᾱ_T is small but positive because of the clipping).
* Forward process: x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, ε ~ N(0, I), on every gene. The model is called as
  ``model(x_t, t, ones, ones, cond)``: every gene is a visible input, none is hidden as a key (the masks of the
  masked-diffusion model are all ones, so ``zero_emb`` and the key mask do nothing).
* Loss (:func:`gaussian_training_loss`): the mean squared error of x̂₀ over all genes and rows, in float32.
* Reverse step (:func:`gaussian_reverse_step`): from step t to an earlier step s (s = t − 1 for the full sampler, a
  jump for a step budget) the DDPM posterior q(x_s | x_t, x₀ = x̂₀), with ᾱ_{t|s} = ᾱ_t / ᾱ_s,

      mean     = √ᾱ_s (1 − ᾱ_{t|s}) / (1 − ᾱ_t) · x̂₀ + √ᾱ_{t|s} (1 − ᾱ_s) / (1 − ᾱ_t) · x_t,
      variance = (1 − ᾱ_{t|s}) (1 − ᾱ_s) / (1 − ᾱ_t);

  the last step (s = 0) returns x̂₀. The sampling loop itself is in :mod:`sthinge.models.sampler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from sthinge.models.diffusion import _draw

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.models.hinge import Hinge, HingeConfig

__all__ = ["GaussianSchedule", "as_gaussian_schedule", "gaussian_reverse_step", "gaussian_training_loss"]


@dataclass(frozen=True)
class GaussianSchedule:
    """Noise schedule of Gauss-Diff: the cosine schedule of Nichol & Dhariwal (2021) over t = 0..T.

    Parameters
    ----------
    n_steps
        Number of steps T.
    offset
        The offset s of f(t) = cos²(π/2 · (t/T + s)/(1 + s)) (0.008 in Nichol & Dhariwal).
    max_beta
        Upper clip of β_t (0.999 in Nichol & Dhariwal), so that ᾱ_T > 0.

    Examples
    --------
    >>> s = GaussianSchedule(50)
    >>> float(s.alpha_bar_table[0]), bool(s.alpha_bar_table[-1] > 0), float(s.beta_table.max())
    (1.0, True, 0.999)
    """

    n_steps: int = 50
    offset: float = 0.008
    max_beta: float = 0.999

    def __post_init__(self) -> None:
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be positive, got {self.n_steps}")
        if self.offset < 0:
            raise ValueError(f"offset must be >= 0, got {self.offset}")
        if not 0 < self.max_beta < 1:
            raise ValueError(f"max_beta must lie in (0, 1), got {self.max_beta}")

    @classmethod
    def from_config(cls, config: HingeConfig) -> GaussianSchedule:
        """The schedule of a :class:`~sthinge.models.hinge.HingeConfig`: T = ``config.n_steps``, default offsets.

        Parameters
        ----------
        config
            Anything with an ``n_steps`` attribute.

        Returns
        -------
        GaussianSchedule
        """
        return cls(int(config.n_steps))

    @cached_property
    def beta_table(self) -> Tensor:
        """(T+1,) float64 β_t for t = 0..T (β_0 = 0), clipped at ``max_beta``."""
        t = torch.arange(self.n_steps + 1, dtype=torch.float64)
        f = torch.cos(0.5 * math.pi * (t / self.n_steps + self.offset) / (1 + self.offset)) ** 2
        beta = (1 - f[1:] / f[:-1]).clamp(0.0, self.max_beta)
        return torch.cat([beta.new_zeros(1), beta])

    @cached_property
    def alpha_bar_table(self) -> Tensor:
        """(T+1,) float64 ᾱ_t = Π_{i≤t} (1 − β_i) for t = 0..T (ᾱ_0 = 1, strictly decreasing, ᾱ_T > 0)."""
        return torch.cumprod(1 - self.beta_table, dim=0)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ_t for integer steps ``t`` (float64, on ``t``'s device).

        Parameters
        ----------
        t
            Integer steps in 0..T, any shape.

        Returns
        -------
        Tensor
            ᾱ_t, the shape of ``t``.
        """
        return self.alpha_bar_table.to(t.device)[t]

    def sample_t(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        t_max: int | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(batch,) steps uniform on 1..t_max (default T), drawn as :meth:`MaskSchedule.sample_t` draws them.

        Parameters
        ----------
        batch
            Number of steps to draw.
        generator
            Random generator (drawn on its device, then moved to ``device``).
        t_max
            Largest step (the warm-start curriculum's cap), 1 ≤ t_max ≤ T; None for T.
        device
            Device of the result.

        Returns
        -------
        Tensor
            (batch,) int64 steps.
        """
        t_max = self.n_steps if t_max is None else t_max
        if not 1 <= t_max <= self.n_steps:
            raise ValueError(f"t_max must lie in 1..{self.n_steps}, got {t_max}")
        u = _draw("uniform", (batch,), generator, device)
        return (u * t_max).long().clamp_max(t_max - 1) + 1

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Forward noising x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε.

        Parameters
        ----------
        x0
            (B, G) clean values.
        t
            (B,) integer steps in 0..T.
        noise
            (B, G) standard normal ε.

        Returns
        -------
        Tensor
            (B, G) x_t, in ``x0``'s dtype.
        """
        ab = self.alpha_bar(t.to(x0.device)).unsqueeze(1)  # (B, 1) float64
        return ab.sqrt().to(x0.dtype) * x0 + (1 - ab).sqrt().to(x0.dtype) * noise.to(x0.dtype)

    def posterior(self, t: int, s: int) -> tuple[float, float, float]:
        """Coefficients of the DDPM posterior q(x_s | x_t, x₀) for 0 ≤ s < t ≤ T.

        With ᾱ_{t|s} = ᾱ_t / ᾱ_s the posterior is Gaussian with mean ``coef_x0 · x₀ + coef_xt · x_t`` and variance
        ``variance`` (for s = t − 1 that is the standard β̃_t = β_t (1 − ᾱ_{t−1}) / (1 − ᾱ_t)).

        Parameters
        ----------
        t
            Current step.
        s
            Earlier step (s = 0 gives mean x₀ and variance 0).

        Returns
        -------
        coef_x0
            √ᾱ_s (1 − ᾱ_{t|s}) / (1 − ᾱ_t).
        coef_xt
            √ᾱ_{t|s} (1 − ᾱ_s) / (1 − ᾱ_t).
        variance
            (1 − ᾱ_{t|s}) (1 − ᾱ_s) / (1 − ᾱ_t).
        """
        if not 0 <= s < t <= self.n_steps:
            raise ValueError(f"need 0 <= s < t <= {self.n_steps}, got t={t}, s={s}")
        ab_t, ab_s = float(self.alpha_bar_table[t]), float(self.alpha_bar_table[s])
        ab_ts = ab_t / ab_s
        coef_x0 = math.sqrt(ab_s) * (1 - ab_ts) / (1 - ab_t)
        coef_xt = math.sqrt(ab_ts) * (1 - ab_s) / (1 - ab_t)
        variance = (1 - ab_ts) * (1 - ab_s) / (1 - ab_t)
        return coef_x0, coef_xt, variance


def as_gaussian_schedule(schedule: Any, config: HingeConfig) -> GaussianSchedule:
    """The Gauss-Diff schedule to use for a model with ``config``, given what a caller passed as ``schedule``.

    Parameters
    ----------
    schedule
        None (the model's: :meth:`GaussianSchedule.from_config`), a :class:`GaussianSchedule` (used as it is) or a
        :class:`~sthinge.models.diffusion.MaskSchedule` (as the training loop passes for any model): it fixes no
        noise levels, only T and G, which must be the model's; the model's Gaussian schedule is used.
    config
        The model's configuration (``n_steps`` and ``n_genes``).

    Returns
    -------
    GaussianSchedule
    """
    if schedule is None:
        return GaussianSchedule.from_config(config)
    if isinstance(schedule, GaussianSchedule):
        return schedule
    from sthinge.models.diffusion import MaskSchedule

    if isinstance(schedule, MaskSchedule):
        if schedule.n_steps != config.n_steps or schedule.n_genes != config.n_genes:
            raise ValueError(
                f"a Gauss-Diff model (T={config.n_steps}, G={config.n_genes}) got a masking schedule with "
                f"T={schedule.n_steps}, G={schedule.n_genes}; pass a GaussianSchedule or None"
            )
        return GaussianSchedule.from_config(config)
    raise TypeError(f"schedule must be a GaussianSchedule, a MaskSchedule or None, got {type(schedule).__name__}")


def gaussian_training_loss(
    model: Hinge,
    x0: Tensor,
    cond: Tensor,
    schedule: GaussianSchedule | None = None,
    *,
    generator: torch.Generator | None = None,
    t_max: int | None = None,
) -> Tensor:
    """One Gauss-Diff training loss on a batch.

    Draws t ~ U{1..t_max}, then ε ~ N(0, I) on every gene, forms x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε, calls
    ``model(x_t, t, ones, ones, cond)`` (every gene visible) and returns the mean squared error of x̂₀ over all
    genes and rows, in float32.

    Parameters
    ----------
    model
        The denoiser (a :class:`~sthinge.models.hinge.Hinge` with ``objective="gauss-diff"``, or anything with its
        forward signature and a ``config`` holding ``n_steps``).
    x0
        (B, G) clean expression.
    cond
        (B, C) histology features.
    schedule
        Noise schedule (default: ``GaussianSchedule.from_config(model.config)``).
    generator
        Random generator for t and ε (drawn on its device, then moved to ``x0``'s).
    t_max
        Largest step drawn (the warm-start curriculum's cap), None for T.

    Returns
    -------
    Tensor
        Scalar float32 loss.
    """
    schedule = schedule or GaussianSchedule.from_config(model.config)
    B, G = x0.shape
    n_genes = getattr(model.config, "n_genes", G)
    if G != n_genes:
        raise ValueError(f"x0 has {G} genes, the model {n_genes}")
    device = x0.device
    t = schedule.sample_t(B, generator=generator, t_max=t_max, device=device)  # (B,)
    noise = _draw("normal", (B, G), generator, device).to(x0.dtype)  # (B, G)
    x_t = schedule.q_sample(x0, t, noise)
    ones = torch.ones_like(x0)
    x0_hat = model(x_t, t, ones, ones, cond)  # (B, G)
    return ((x0_hat.float() - x0.float()) ** 2).mean()


def gaussian_reverse_step(
    schedule: GaussianSchedule, x_t: Tensor, x0_hat: Tensor, t: int, s: int, noise: Tensor | None
) -> Tensor:
    """One reverse step t → s < t: a draw from the DDPM posterior q(x_s | x_t, x₀ = x̂₀); x̂₀ itself when s = 0.

    Parameters
    ----------
    schedule
        The noise schedule.
    x_t
        (R, G) current values.
    x0_hat
        (R, G) the model's prediction at (x_t, t).
    t, s
        Current and next step, 0 ≤ s < t ≤ T.
    noise
        (R, G) standard normal draws for the step (not used, and may be None, when s = 0).

    Returns
    -------
    Tensor
        (R, G) x_s.
    """
    if s == 0:
        return x0_hat
    coef_x0, coef_xt, variance = schedule.posterior(t, s)
    return coef_x0 * x0_hat + coef_xt * x_t + math.sqrt(variance) * noise
