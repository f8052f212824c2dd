"""Masked diffusion over genes (paper §3.2; official ``mask_scheduler.py``; see Method, :ref:`method-diffusion`).

Visibility schedule ᾱ_t = (1 − t/T)^ζ, t = 0..T. The exponent is the official ``poly_auto``
ζ = log_T(G / K_tail) clipped to [1.05, 4] (K_tail = 1: the first reverse step reveals one gene), a fixed ζ
(``kind="poly"``) or linear (ζ = 1). ``kind="cosine"`` is the "Cosine" row of the paper's Table S4,
ᾱ_t = cos(π/2 · t/T) with ᾱ_T = 0 exactly; the paper does not print its formula, so this one is sthinge's reading.

Masks are represented by one *reveal time* τ_g ∈ {1..T} per gene: gene g is masked at step t iff t ≥ τ_g,
so m_t = [τ > t], masks are nested in t by construction, and the genes revealed by the reverse step
t → t−1 are exactly those with τ = t.

* ``masking="exact"`` (official default): a random permutation per sample; the gene of rank r gets
  τ = min{t : s_t > r} with s_t = ⌊(1 − ᾱ_t)·G⌋, so exactly s_t genes are masked at step t.
* ``masking="bernoulli"`` (paper Eq. 1): u_g ~ U[0, 1), τ = min{t : 1 − ᾱ_t > u_g}; then
  P(masked at t) = 1 − ᾱ_t and a masked gene is revealed at t−1 with probability π_t = (ᾱ_{t−1} − ᾱ_t)/(1 − ᾱ_t).

All functions are vectorised over the batch and the genes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from sthinge.models.likelihood import beta_nll, gaussian_crps

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.models.gaussian_diffusion import GaussianSchedule
    from sthinge.models.hinge import Hinge, HingeConfig

__all__ = ["MaskSchedule", "calibrate", "fill_values", "training_loss"]

_KINDS = ("poly_auto", "poly", "linear", "cosine")
_MASKINGS = ("exact", "bernoulli")
_FILLS = ("gauss", "zero")
_LOSS_WEIGHTS = ("revealed", "pi_t", "masked")
_LIKELIHOOD_LOSSES = ("crps", "beta_nll")


def _draw(kind: str, shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device | str | None):
    """Random numbers drawn on the generator's device (so a seed gives the same draws anywhere), then moved."""
    gen_device = generator.device if generator is not None else device
    fn = torch.rand if kind == "uniform" else torch.randn
    return fn(shape, generator=generator, device=gen_device).to(device)


@dataclass(frozen=True)
class MaskSchedule:
    """Masking schedule of the forward process.

    Parameters
    ----------
    n_genes
        Number of genes G.
    n_steps
        Number of steps T.
    kind
        ``"poly_auto"`` (official default), ``"poly"`` (fixed ``zeta``), ``"linear"`` (ζ = 1) or ``"cosine"``
        (ᾱ_t = cos(π/2 · t/T), ᾱ_T = 0 exactly: the "Cosine" row of the paper's Table S4; the paper does not print
        the formula, this is sthinge's reading).
    zeta
        Exponent for ``kind="poly"``.
    k_tail
        Genes still visible at t = T−1 for ``poly_auto`` (before clipping).
    masking
        ``"exact"`` (nested random permutation, exact counts) or ``"bernoulli"`` (independent per gene).

    Examples
    --------
    >>> s = MaskSchedule(200)
    >>> round(s.exponent, 3), s.n_masked_table[-2], s.t_cap()
    (1.354, 199, 7)
    """

    n_genes: int
    n_steps: int = 50
    kind: str = "poly_auto"
    zeta: float | None = None
    k_tail: int = 1
    masking: str = "exact"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"kind must be one of {_KINDS}, got {self.kind!r}")
        if self.masking not in _MASKINGS:
            raise ValueError(f"masking must be one of {_MASKINGS}, got {self.masking!r}")
        if self.n_genes < 1 or self.n_steps < 1:
            raise ValueError("n_genes and n_steps must be positive")
        if self.kind == "poly" and (self.zeta is None or self.zeta <= 0):
            raise ValueError("kind='poly' needs a positive zeta")

    @classmethod
    def from_config(cls, config: HingeConfig) -> MaskSchedule:
        """The schedule a :class:`~sthinge.models.hinge.HingeConfig` describes."""
        return cls(config.n_genes, config.n_steps, config.schedule, config.zeta, config.k_tail, config.masking)

    @cached_property
    def exponent(self) -> float | None:
        """ζ of the power law ᾱ_t = (1 − t/T)^ζ; None for ``kind="cosine"``, which is not a power law."""
        if self.kind == "cosine":
            return None
        if self.kind == "linear":
            return 1.0
        if self.kind == "poly":
            return float(self.zeta)
        if self.n_steps == 1:
            return 1.0
        return min(max(math.log(self.n_genes / self.k_tail) / math.log(self.n_steps), 1.05), 4.0)

    @cached_property
    def alpha_bar_table(self) -> Tensor:
        """(T+1,) float64 ᾱ_t for t = 0..T (ᾱ_0 = 1, ᾱ_T = 0)."""
        t = torch.arange(self.n_steps + 1, dtype=torch.float64)
        if self.kind == "cosine":
            ab = torch.cos(0.5 * math.pi * t / self.n_steps)
            ab[-1] = 0.0  # cos(π/2) is 6e-17 in float64, which would leave ⌊(1 − ᾱ_T)·G⌋ one gene short of G
            return ab
        return (1 - t / self.n_steps) ** self.exponent

    @cached_property
    def n_masked_table(self) -> tuple[int, ...]:
        """s_t = ⌊(1 − ᾱ_t)·G⌋ for t = 0..T (s_0 = 0, s_T = G)."""
        ab = self.alpha_bar_table.tolist()
        return tuple(min(self.n_genes, math.floor((1 - a) * self.n_genes)) for a in ab)

    def alpha_bar(self, t: Tensor) -> Tensor:
        """ᾱ_t for integer steps ``t`` (float64, on ``t``'s device)."""
        return self.alpha_bar_table.to(t.device)[t]

    def pi(self, t: Tensor) -> Tensor:
        """π_t = (ᾱ_{t−1} − ᾱ_t)/(1 − ᾱ_t), the reveal probability of a masked gene at step t ≥ 1 (float64)."""
        ab = self.alpha_bar_table.to(t.device)
        return (ab[t - 1] - ab[t]) / (1 - ab[t])

    def t_cap(self, ratio: float = 0.2) -> int:
        """Warm-start curriculum cap: the largest t with s_t ≤ ⌊ratio·G⌋ (at least 1)."""
        limit = math.floor(ratio * self.n_genes)
        return max([t for t, s in enumerate(self.n_masked_table) if s <= limit and t >= 1], default=1)

    def sample_t(
        self,
        batch: int,
        *,
        generator: torch.Generator | None = None,
        t_max: int | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """(batch,) steps uniform on 1..t_max (default T)."""
        t_max = self.n_steps if t_max is None else t_max
        if not 1 <= t_max <= self.n_steps:
            raise ValueError(f"t_max must lie in 1..{self.n_steps}, got {t_max}")
        u = _draw("uniform", (batch,), generator, device)
        return (u * t_max).long().clamp_max(t_max - 1) + 1

    def reveal_times(
        self, batch: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(batch, G) reveal times τ ∈ 1..T: gene g is masked at step t iff t ≥ τ_g (see the module docstring)."""
        u = _draw("uniform", (batch, self.n_genes), generator, device)  # (B, G)
        if self.masking == "exact":
            rank = u.argsort(dim=1).argsort(dim=1)  # a random permutation's rank of each gene
            s = torch.tensor(self.n_masked_table, device=u.device)
            return torch.searchsorted(s, rank, right=True)
        q = (1 - self.alpha_bar_table).to(u.device)
        return torch.searchsorted(q, u.double(), right=True).clamp(1, self.n_steps)

    @staticmethod
    def masks(t: Tensor, reveal_times: Tensor, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
        """Visibility at t and t−1.

        Parameters
        ----------
        t
            (B,) steps.
        reveal_times
            (B, G) from :meth:`reveal_times`.
        dtype
            Output dtype.

        Returns
        -------
        visible
            m_t (B, G).
        next_visible
            m_{t−1} (B, G) ⊇ m_t.
        """
        t = t.view(-1, 1)
        return (reveal_times > t).to(dtype), (reveal_times >= t).to(dtype)


def fill_values(
    shape: tuple[int, ...],
    fill: str,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Values of masked entries: N(0, 1) (``"gauss"``) or 0 (``"zero"``).

    Parameters
    ----------
    shape
        Shape of the result.
    fill
        ``"gauss"`` or ``"zero"`` (the model's ``config.mask_fill``).
    generator
        Random generator of the Gaussian draws (drawn on its device, then moved to ``device``).
    device, dtype
        Device and dtype of the result.
    """
    if fill not in _FILLS:
        raise ValueError(f"fill must be one of {_FILLS}, got {fill!r}")
    if fill == "zero":
        return torch.zeros(shape, device=device, dtype=dtype)
    return _draw("normal", shape, generator, device).to(dtype)


def calibrate(x_t: Tensor, x0_hat: Tensor, visible: Tensor) -> Tensor:
    """Calibration x̃₀ = m ⊙ x_t + (1 − m) ⊙ x̂₀: keep visible values, take predictions elsewhere.

    Parameters
    ----------
    x_t
        (B, G) current values (visible entries hold the data).
    x0_hat
        (B, G) the model's prediction.
    visible
        (B, G) visibility mask m (1 = visible).
    """
    return torch.where(visible.bool(), x_t, x0_hat)


def training_loss(
    model: Hinge,
    x0: Tensor,
    cond: Tensor,
    schedule: MaskSchedule | GaussianSchedule | None = None,
    *,
    generator: torch.Generator | None = None,
    t_max: int | None = None,
    loss_weight: str = "masked",
    fill: str | None = None,
    likelihood_loss: str | None = None,
) -> Tensor:
    """One masked-diffusion training loss on a batch.

    Draws t ~ U{1..t_max}, the masks m_t ⊆ m_{t−1}, fills masked entries, calls
    ``model(x_t, t, m_{t−1}, m_t, cond)`` and scores x̂₀ in float32.

    For a model with ``config.likelihood == "gaussian"`` the call is ``model(..., return_std=True)`` and the
    element-wise squared error (x̂₀ − x₀)² is replaced by the scoring rule ``likelihood_loss`` of the predicted
    (μ, σ) at x₀ (:func:`~sthinge.models.likelihood.gaussian_crps` censored at 0, or
    :func:`~sthinge.models.likelihood.beta_nll`); the genes and weights below are the same. The random draws
    are the same for both likelihoods.

    For a model with ``config.objective == "gauss-diff"`` (the paper's Gauss-Diff ablation) the loss is instead
    :func:`~sthinge.models.gaussian_diffusion.gaussian_training_loss` (DDPM noising of every gene, squared error of
    x̂₀ over all genes), drawn with the same ``generator`` and ``t_max``; ``loss_weight``, ``fill`` and
    ``likelihood_loss`` do not apply to it, and ``schedule`` may then be a
    :class:`~sthinge.models.gaussian_diffusion.GaussianSchedule` (a :class:`MaskSchedule` only fixes T, which must
    be the model's).

    Parameters
    ----------
    model
        The denoiser (a :class:`~sthinge.models.hinge.Hinge` or anything with its forward signature and
        a ``config`` holding ``mask_fill``, when ``fill`` is not given).
    x0
        (B, G) clean expression.
    cond
        (B, C) histology features.
    schedule
        Masking schedule (default: ``MaskSchedule.from_config(model.config)``).
    generator
        Random generator for t, masks and fill (for Gauss-Diff: t and the noise).
    t_max
        Largest step drawn: ``schedule.t_cap()`` for the warm-start curriculum, None for T.
    loss_weight
        ``"masked"`` (default), ``"pi_t"`` (paper Eq. 2) or ``"revealed"`` (official code).
        ``"revealed"``: Σ d_t (x̂₀ − x₀)² / Σ d_t over the batch, d_t = m_{t−1} − m_t the genes revealed
        at this step; ``"pi_t"`` (paper Eq. 2): mean over the batch of π_t Σ_g (1 − m_t)(x̂₀ − x₀)², divided by G;
        ``"masked"`` (sthinge's default, in neither the paper nor the official code): Σ (1 − m_t)(x̂₀ − x₀)² /
        Σ (1 − m_t), every masked gene weighted equally, so each training row scores all the genes it hides instead
        of the few revealed at t (it trained better on Her2ST: ``docs/benchmarks.md``).
    fill
        Override of the model's ``mask_fill`` (``"gauss"`` or ``"zero"``).
    likelihood_loss
        Override of the model's ``config.likelihood_loss`` (``"crps"`` or ``"beta_nll"``); only used by
        ``likelihood="gaussian"`` models.

    Returns
    -------
    Scalar loss.
    """
    if loss_weight not in _LOSS_WEIGHTS:
        raise ValueError(f"loss_weight must be one of {_LOSS_WEIGHTS}, got {loss_weight!r}")
    if getattr(model.config, "objective", "mask-diff") == "gauss-diff":
        # imported here: gaussian_diffusion imports this module
        from sthinge.models.gaussian_diffusion import as_gaussian_schedule, gaussian_training_loss

        schedule = as_gaussian_schedule(schedule, model.config)
        return gaussian_training_loss(model, x0, cond, schedule, generator=generator, t_max=t_max)
    gaussian = getattr(model.config, "likelihood", "point") == "gaussian"
    if gaussian:
        likelihood_loss = likelihood_loss or model.config.likelihood_loss
    if likelihood_loss is not None and likelihood_loss not in _LIKELIHOOD_LOSSES:
        raise ValueError(f"likelihood_loss must be one of {_LIKELIHOOD_LOSSES}, got {likelihood_loss!r}")
    schedule = schedule or MaskSchedule.from_config(model.config)
    B, G = x0.shape
    if G != schedule.n_genes:
        raise ValueError(f"x0 has {G} genes, the schedule {schedule.n_genes}")
    device = x0.device
    t = schedule.sample_t(B, generator=generator, t_max=t_max, device=device)  # (B,)
    tau = schedule.reveal_times(B, generator=generator, device=device)  # (B, G)
    visible, next_visible = schedule.masks(t, tau, x0.dtype)
    noise = fill_values((B, G), fill or model.config.mask_fill, generator=generator, device=device, dtype=x0.dtype)
    x_t = visible * x0 + (1 - visible) * noise
    if gaussian:
        mean, std = model(x_t, t, next_visible, visible, cond, return_std=True)  # (B, G) each
        if likelihood_loss == "crps":
            err = gaussian_crps(mean.float(), std.float(), x0.float(), lower=0.0)
        else:
            err = beta_nll(mean.float(), std.float(), x0.float())
    else:
        x0_hat = model(x_t, t, next_visible, visible, cond)  # (B, G)
        err = (x0_hat.float() - x0.float()) ** 2
    if loss_weight == "revealed":
        w = next_visible.float() - visible.float()
        return (w * err).sum() / w.sum().clamp_min(1)
    if loss_weight == "masked":
        w = 1 - visible.float()
        return (w * err).sum() / w.sum().clamp_min(1)
    w = schedule.pi(t).float().unsqueeze(1) * (1 - visible.float())
    return (w * err).sum() / (B * G)
