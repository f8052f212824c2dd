"""Per-gene predictive distributions of HINGE and the scoring rules that train them.

With ``HingeConfig(likelihood="gaussian")`` the decoder predicts, for every gene, a mean μ (CellFM's value decoder,
exactly as for ``likelihood="point"``) and a standard deviation σ (a small extra head, :class:`StdHead`), on the
normalised (log1p) scale the model is trained on. Expression on that scale is non-negative with many exact zeros, so
the predictive distribution is the Gaussian **censored at 0**: a draw is ``max(0, μ + σ ε)``, ε ~ N(0, 1), which puts
the mass Φ(−μ/σ) on exactly 0 and never produces a negative value. Its moments are
:func:`censored_gaussian_moments`.

Scoring rules (element-wise; :func:`sthinge.models.training_loss` weights and averages them over the same genes
it scores with the squared error for ``likelihood="point"``):

* :func:`gaussian_crps`: the continuous ranked probability score, closed form, of the Gaussian or (``lower=0``) of
  the Gaussian censored at ``lower``, i.e. of exactly the distribution the sampler draws from. Proper; its gradient
  in μ and σ is bounded, so it trains stably. ``likelihood_loss="crps"`` uses it with ``lower=0``.
* :func:`beta_nll`: the β-NLL of Seitzer et al. (2022), ``sg(σ^{2β}) · (log σ² + (x − μ)²/σ²) / 2``
  (``sg`` = stop-gradient), β = 0.5, of the uncensored Gaussian. ``likelihood_loss="beta_nll"``.

Which one is the default, and why, is measured in ``benchmarks/bench_likelihood.py`` (see :class:`HingeConfig`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sthinge._docs import _doc

__all__ = ["INIT_STD", "MIN_STD", "StdHead", "beta_nll", "censored_gaussian_moments", "gaussian_crps"]

MIN_STD = 1e-2
"""Floor of the predicted standard deviation (log1p scale): σ = softplus(r) + MIN_STD."""
INIT_STD = 1.0
"""Predicted standard deviation of a freshly initialised :class:`StdHead`, for every input."""

_SQRT2 = math.sqrt(2.0)
_INV_SQRT_PI = 1.0 / math.sqrt(math.pi)


def _phi(z: Tensor) -> Tensor:
    return torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)


def _Phi(z: Tensor) -> Tensor:
    return torch.special.ndtr(z)


class StdHead(nn.Module):
    """Per-gene standard deviation σ from the features CellFM's value decoder reads.

    σ = softplus(w₂ SiLU(W₁ x + b₁) + b₂) + :data:`MIN_STD`, computed in float32. ``w2`` starts at zero weight and
    with the bias that gives σ = :data:`INIT_STD`, so at initialisation σ is the same for every gene and input and
    the head changes nothing else of the model (it is a separate branch: the mean is untouched).

    Parameters
    ----------
    d_model
        Width D of the features (the decoder's input).
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_model)
        self.w2 = nn.Linear(d_model, 1)
        with torch.no_grad():
            nn.init.zeros_(self.w2.weight)
            self.w2.bias.fill_(math.log(math.expm1(INIT_STD - MIN_STD)))  # softplus⁻¹

    def forward(self, x: Tensor) -> Tensor:
        """Features (B, G, D) -> σ (B, G), float32, ≥ MIN_STD."""
        r = self.w2(F.silu(self.w1(x))).squeeze(-1)
        return F.softplus(r.float()) + MIN_STD


@_doc
def gaussian_crps(mean: Tensor, std: Tensor, x: Tensor, *, lower: float | None = None) -> Tensor:
    """Closed-form CRPS of N(mean, std²), or of that Gaussian censored at ``lower``, at the observations ``x``.

    CRPS(F, x) = ∫ (F(y) − 1{y ≥ x})² dy (lower is better; it has the units of x). With z = (x − μ)/σ:

    * Gaussian: σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π] (Gneiting et al. 2005).
    * censored at L (the law of max(L, X)), l = (L − μ)/σ, z = (max(x, L) − μ)/σ: the Gaussian's value minus
      σ ∫_{−∞}^{l} Φ² = σ [l Φ(l)² + 2 Φ(l) φ(l) − Φ(√2 l)/√π], plus ``abs(x − max(x, L))`` (0 for x ≥ L).

    Parameters
    ----------
    %(gaussian_forecast)s
    lower
        Censoring point L (``0.0`` for the sampler's distribution on the log1p scale), or None for the plain
        Gaussian.

    Returns
    -------
    Tensor
        Element-wise CRPS, the broadcast shape of the inputs.

    Examples
    --------
    >>> round(gaussian_crps(torch.tensor(0.0), torch.tensor(1.0), torch.tensor(0.0)).item(), 4)  # (√2 − 1)/√π
    0.2337
    """
    if lower is None:
        z = (x - mean) / std
        return std * (z * (2 * _Phi(z) - 1) + 2 * _phi(z) - _INV_SQRT_PI)
    xc = x.clamp_min(lower)
    z = (xc - mean) / std
    lo = (lower - mean) / std
    Phi_lo = _Phi(lo)
    plain = z * (2 * _Phi(z) - 1) + 2 * _phi(z) - _INV_SQRT_PI
    below = lo * Phi_lo.square() + 2 * Phi_lo * _phi(lo) - _Phi(_SQRT2 * lo) * _INV_SQRT_PI
    return (x - xc).abs() + std * (plain - below)


@_doc
def beta_nll(mean: Tensor, std: Tensor, x: Tensor, *, beta: float = 0.5) -> Tensor:
    """β-NLL of Seitzer et al. (2022): the Gaussian negative log-likelihood weighted by sg(σ^{2β}).

    ``sg(σ²)^β · ½ (log σ² + (x − μ)² / σ²)``, sg = stop-gradient (the constant ½ log 2π is left out). β = 0 is the
    NLL; β = 1 gives the mean the gradient of the squared error. For any β its expected gradient vanishes exactly at
    μ = E[x], σ² = Var[x], so it fits the Gaussian like the NLL does, but its *value* is not a proper score (the
    weight depends on the forecast): compare models with :func:`gaussian_crps`.

    Parameters
    ----------
    %(gaussian_forecast)s
    beta
        β in [0, 1].

    Returns
    -------
    Tensor
        Element-wise loss.
    """
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    var = std.square()
    nll = 0.5 * (var.log() + (x - mean).square() / var)
    return nll * var.detach() ** beta if beta > 0 else nll


def censored_gaussian_moments(mean: Tensor, std: Tensor, lower: float = 0.0) -> tuple[Tensor, Tensor]:
    """Mean and variance of max(lower, X), X ~ N(mean, std²): the moments of one draw of the sampler.

    With a = (L − μ)/σ and Y = max(Z, a): E[Y] = a Φ(a) + φ(a), E[Y²] = a² Φ(a) + 1 − Φ(a) + a φ(a); the result is
    μ + σ E[Y] and σ² Var(Y) (clamped at 0 against rounding).

    Parameters
    ----------
    mean, std
        μ and σ > 0.
    lower
        Censoring point L.

    Returns
    -------
    mean, variance
        Tensors of the broadcast shape.
    """
    a = (lower - mean) / std
    Phi_a, phi_a = _Phi(a), _phi(a)
    ey = a * Phi_a + phi_a
    ey2 = a.square() * Phi_a + (1 - Phi_a) + a * phi_a
    return mean + std * ey, std.square() * (ey2 - ey.square()).clamp_min(0)
