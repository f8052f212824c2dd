"""Split-conformal calibration of prediction intervals, per gene (no AnnData here: arrays in, arrays out).

The score of a calibration spot for gene g is its error in units of the predicted spread,
``s = |y - mean| / (std + delta_g)``, where ``delta_g`` (a tenth of the gene's median predicted std over the
calibration spots, at least 1e-6) keeps spots with an almost-zero std from dominating. For a nominal level L the
calibrated half-width multiplier is the ``ceil((n + 1) L)``-th smallest of the n scores (split conformal,
Vovk et al. 2005; Lei et al. 2018): if a new spot is exchangeable with the calibration spots, the interval
``mean +- q_g(L) (std + delta_g)`` contains its value with probability at least L, and at most
``L + 1 / (n + 1)``. Lower bounds are clipped at 0 (expression on the log1p scale is never negative, so clipping
changes no coverage).

The multipliers are stored on a grid of levels (:data:`LEVEL_GRID`) so that a saved model can give intervals at
any level later; levels between grid points are interpolated linearly.

Why a few lines of our own instead of ``mapie`` or ``crepes``: both calibrate a scikit-learn estimator they call
themselves, one output at a time, while here the model is a sampler whose mean and spread come out together for
all genes; what is needed is one order statistic per gene and level, which is ``numpy.sort``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL_GRID: tuple[float, ...] = tuple(round(v, 3) for v in np.arange(0.01, 0.9951, 0.005))
"""Nominal levels at which the calibration is stored (0.010, 0.015, ..., 0.995)."""
DELTA_FRACTION = 0.1
"""``delta_g`` is this fraction of the gene's median predicted std on the calibration spots."""


@dataclass
class Calibration:
    """Per-gene split-conformal multipliers of a model's predicted std.

    Attributes
    ----------
    levels
        The grid of nominal levels (ascending), :data:`LEVEL_GRID`.
    scale
        ``(len(levels), n_genes)``: the multiplier ``q_g(L)`` of ``std + delta`` for each level and gene.
    delta
        ``(n_genes,)``: the offset added to the std before scaling.
    n
        Number of calibration spots.
    info
        Where the calibration spots came from and how they were sampled (``source``, ``sections``,
        ``n_samples``, ``n_steps``, ``seed``).
    """

    levels: np.ndarray
    scale: np.ndarray
    delta: np.ndarray
    n: int
    info: dict[str, Any] = field(default_factory=dict)

    def multiplier(self, level: float) -> np.ndarray:
        """``q_g(level)`` for every gene (linear interpolation between grid levels)."""
        lv = self.levels
        if not lv[0] <= level <= lv[-1]:
            raise ValueError(f"The calibration covers levels {lv[0]:g}-{lv[-1]:g}; got {level:g}.")
        j = int(np.searchsorted(lv, level))
        if lv[j] == level or j == 0:
            return self.scale[j]
        w = (level - lv[j - 1]) / (lv[j] - lv[j - 1])
        return (1.0 - w) * self.scale[j - 1] + w * self.scale[j]

    def interval(self, mean: np.ndarray, std: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bound (spots x genes) of the calibrated central interval at ``level``."""
        half = self.multiplier(level)[None, :] * (np.asarray(std, np.float64) + self.delta[None, :])
        mean = np.asarray(mean, np.float64)
        return np.maximum(mean - half, 0.0).astype(np.float32), (mean + half).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (what a model file stores)."""
        return {
            "levels": [float(v) for v in self.levels],
            "scale": np.asarray(self.scale, np.float32).tolist(),
            "delta": np.asarray(self.delta, np.float32).tolist(),
            "n": int(self.n),
            "info": dict(self.info),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], n_genes: int) -> Calibration:
        """Inverse of :meth:`to_dict`; every field is checked (a ``ValueError`` says which is wrong)."""
        if not isinstance(d, dict) or not {"levels", "scale", "delta", "n"} <= set(d):
            raise ValueError("calibration: expected a dict with 'levels', 'scale', 'delta' and 'n'.")
        levels = np.asarray(d["levels"], np.float64)
        scale = np.asarray(d["scale"], np.float64)
        delta = np.asarray(d["delta"], np.float64)
        if levels.ndim != 1 or levels.size < 2 or not np.all(np.diff(levels) > 0) or levels[0] <= 0 or levels[-1] >= 1:
            raise ValueError("calibration: 'levels' must be ascending values in (0, 1).")
        if scale.shape != (levels.size, n_genes) or not np.isfinite(scale).all() or (scale < 0).any():
            raise ValueError(f"calibration: 'scale' must be finite, >= 0 and of shape ({levels.size}, {n_genes}).")
        if delta.shape != (n_genes,) or not np.isfinite(delta).all() or (delta <= 0).any():
            raise ValueError(f"calibration: 'delta' must hold {n_genes} finite positive values.")
        n = d["n"]
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError("calibration: 'n' must be a positive integer.")
        info = d.get("info", {})
        return cls(levels, scale, delta, int(n), dict(info) if isinstance(info, dict) else {})


def conformal_calibration(
    truth: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    levels: tuple[float, ...] = LEVEL_GRID,
    info: dict[str, Any] | None = None,
) -> Calibration:
    """Split-conformal multipliers from the calibration spots' truth, predicted mean and predicted std.

    Parameters
    ----------
    truth, mean, std
        ``(n_spots, n_genes)`` arrays on the same scale; ``std >= 0``.
    levels
        Ascending nominal levels in (0, 1).
    info
        Stored with the calibration.

    Returns
    -------
    The :class:`Calibration`. A level L whose rank ``ceil((n + 1) L)`` exceeds n (too few spots for it) gets
    the largest score, with a warning in ``info["too_few_spots_above"]``.
    """
    truth, mean, std = (np.asarray(a, np.float64) for a in (truth, mean, std))
    if not truth.shape == mean.shape == std.shape or truth.ndim != 2:
        raise ValueError(
            f"truth, mean and std must be (spots, genes) arrays of one shape; got {truth.shape}, "
            f"{mean.shape}, {std.shape}."
        )
    n = truth.shape[0]
    if n < 2:
        raise ValueError(f"Conformal calibration needs at least 2 spots; got {n}.")
    for name, a in (("truth", truth), ("mean", mean), ("std", std)):
        if not np.isfinite(a).all():
            raise ValueError(f"`{name}` of the calibration spots holds NaN or infinite values.")
    if (std < 0).any():
        raise ValueError("`std` of the calibration spots holds negative values.")
    delta = np.maximum(DELTA_FRACTION * np.median(std, axis=0), 1e-6)
    scores = np.sort(np.abs(truth - mean) / (std + delta[None, :]), axis=0)  # (n, G), ascending per gene
    levels = np.asarray(levels, np.float64)
    ranks = np.ceil((n + 1) * levels).astype(int)  # 1-based
    too_few = levels[ranks > n]
    scale = scores[np.minimum(ranks, n) - 1]  # (L, G)
    info = dict(info or {})
    if too_few.size:
        info["too_few_spots_above"] = float(too_few[0])
    return Calibration(levels, scale, delta, n, info)


def min_spots_for(level: float) -> int:
    """The fewest calibration spots with which the conformal guarantee holds at ``level``."""
    return max(1, math.ceil(level / (1.0 - level)))
