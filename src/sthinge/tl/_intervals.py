"""Central prediction intervals and proper scores: the names of quantile layers, z-scores and the CRPS.

One place defines how a prediction's interval at a nominal level is named and computed, so that the writer
(:func:`sthinge.tl.predict`) and the readers (:func:`sthinge.tl.evaluate`, :func:`sthinge.pl.spatial`,
:func:`sthinge.pl.calibration`) agree.

Naming of quantile layers
-------------------------
The quantile ``q`` (a probability in (0, 1)) of a prediction ``key`` is stored as ``layers[f"{key}_q<digits>"]`` of
the prediction table (SpatialData), or ``obsm[f"{key}_q<digits>"]`` (an AnnData's spots x genes DataFrame, like the
std), where ``<digits>`` are the decimal digits of ``q`` after ``"0."``, at least two: read ``q05`` as 0.05,
``q10`` as 0.10, ``q025`` as 0.025, ``q975`` as 0.975. The central interval at level ``L`` spans the quantiles
``(1 - L) / 2`` and ``(1 + L) / 2``:

====== ============ ==========
level  lower         upper
====== ============ ==========
0.50   ``q25``      ``q75``
0.80   ``q10``      ``q90``
0.90   ``q05``      ``q95``
0.95   ``q025``     ``q975``
====== ============ ==========

Percent-style names (``q2.5``) would need a dot in a key and ``q25`` would be ambiguous between 0.25 and 0.025;
reading the digits as a decimal fraction avoids both. Metric columns use the level in percent (``coverage90``,
``width97.5``), see :func:`level_label`.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

DEFAULT_LEVELS: tuple[float, ...] = (0.5, 0.8, 0.9, 0.95)  #: nominal levels reported by ``tl.evaluate``
_DIGITS = 12  # quantiles are rounded to 12 decimals before naming (0.1 + 0.8 must not name q09999999...)
_QNAME = re.compile(r"^q(\d{2,})$")


def check_levels(levels: Any, name: str = "levels", *, ascending: bool = False) -> tuple[float, ...]:
    """Nominal levels as a tuple of floats in (0, 1), duplicates removed, order kept; errors name ``name``.

    With ``ascending``, levels out of ascending order (or repeated) are an error instead."""
    if isinstance(levels, numbers.Real) and not isinstance(levels, bool):
        levels = [levels]
    if isinstance(levels, str) or not isinstance(levels, Sequence | np.ndarray):
        raise TypeError(f"`{name}` must be a number or a sequence of numbers in (0, 1), got {levels!r}.")
    out = []
    for v in levels:
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"`{name}` must hold numbers in (0, 1) (nominal coverage, e.g. 0.9), got {v!r}.")
        v = round(float(v), _DIGITS)
        if not 0.0 < v < 1.0:
            hint = f" (did you mean {v / 100:g}?)" if 1.0 < v < 100.0 else ""
            raise ValueError(f"`{name}` must hold levels strictly between 0 and 1, got {v:g}{hint}.")
        out.append(v)
    if not out:
        raise ValueError(f"`{name}` is empty.")
    if ascending and any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"`{name}` must be in ascending order without repeats, e.g. (0.5, 0.9); got {tuple(out)}.")
    return tuple(dict.fromkeys(out))


def level_label(level: float) -> str:
    """The level in percent as used in column names: 0.9 -> ``"90"``, 0.975 -> ``"97.5"``."""
    return f"{round(100.0 * float(level), _DIGITS - 2):g}"


def quantile_name(q: float) -> str:
    """Name of the quantile ``q`` in (0, 1): ``"q"`` + its decimal digits after ``"0."`` (at least two).

    0.05 -> ``"q05"``, 0.1 -> ``"q10"``, 0.25 -> ``"q25"``, 0.025 -> ``"q025"``, 0.975 -> ``"q975"``.
    """
    q = round(float(q), _DIGITS)
    if not 0.0 < q < 1.0:
        raise ValueError(f"A quantile must lie strictly between 0 and 1, got {q!r}.")
    digits = f"{q:.{_DIGITS}f}".split(".")[1].rstrip("0")
    return "q" + digits.ljust(2, "0")


def quantile_from_name(name: str) -> float:
    """The quantile a name of :func:`quantile_name` stands for (``"q025"`` -> 0.025); also takes ``"<key>_q025"``."""
    suffix = str(name).rsplit("_", 1)[-1]
    match = _QNAME.match(suffix)
    if match is None:
        raise ValueError(f"{name!r} is not a quantile name like 'q05', 'q975' or '<key>_q05'.")
    return float("0." + match.group(1))


def interval_quantiles(level: float) -> tuple[float, float]:
    """The lower and upper quantile of the central interval at ``level``: 0.9 -> (0.05, 0.95)."""
    (level,) = check_levels([level], "level")
    lo = round((1.0 - level) / 2.0, _DIGITS)
    return lo, round(1.0 - lo, _DIGITS)


def interval_layer_names(key: str, level: float) -> tuple[str, str]:
    """Names of the layers (or AnnData ``obsm`` keys) holding the central interval of prediction ``key`` at ``level``.

    ``interval_layer_names("sthinge", 0.9) == ("sthinge_q05", "sthinge_q95")``; 0.5 gives ``q25`` / ``q75``,
    0.8 ``q10`` / ``q90`` and 0.95 ``q025`` / ``q975`` (see the module's docstring for the rule).
    """
    if not isinstance(key, str) or not key:
        raise ValueError(f"`key` must be a non-empty string, got {key!r}.")
    lo, hi = interval_quantiles(level)
    return f"{key}_{quantile_name(lo)}", f"{key}_{quantile_name(hi)}"


def gaussian_z(level: float) -> float:
    """z such that mean +- z std is the central interval at ``level`` of a Gaussian (0.9 -> 1.6449)."""
    from scipy.stats import norm

    (level,) = check_levels([level], "level")
    return float(norm.ppf(0.5 + level / 2.0))


# ----------------------------------------------------------------------------------------------------------
# CRPS
# ----------------------------------------------------------------------------------------------------------
def crps_gaussian(mean: np.ndarray, std: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Closed-form CRPS of N(mean, std^2) at ``y`` (elementwise; ``std == 0`` gives ``|mean - y|``).

    CRPS = std [z (2 Phi(z) - 1) + 2 phi(z) - 1 / sqrt(pi)], z = (y - mean) / std (Gneiting & Raftery, 2007).
    """
    from scipy.stats import norm

    mean, std, y = (np.asarray(a, dtype=np.float64) for a in (mean, std, y))
    err = y - mean
    with np.errstate(divide="ignore", invalid="ignore"):
        z = err / std
        out = std * (z * (2.0 * norm.cdf(z) - 1.0) + 2.0 * norm.pdf(z) - 1.0 / np.sqrt(np.pi))
    return np.where(std == 0, np.abs(err), out)


def crps_samples(samples: np.ndarray, y: np.ndarray, axis: int = 1) -> np.ndarray:
    """CRPS of the distribution represented by ``samples`` (along ``axis``) at ``y``, energy form.

    CRPS = E|X - y| - 1/2 E|X - X'|, with X, X' independent draws. E|X - X'| is estimated without the pairs of a
    sample with itself ("fair" CRPS, Ferro 2014): an unbiased estimate of the CRPS of the distribution the samples
    are drawn from, so that predictions with few samples are not penalised for their number and compare with the
    closed form of a Gaussian. It is computed from the sorted samples in O(S log S):
    ``sum_{i<j} |x_i - x_j| = sum_i (2 i - S - 1) x_(i)`` (i = 1..S). One sample gives ``|x - y|``; equal samples
    give ``|x - y|`` too.
    """
    x = np.moveaxis(np.asarray(samples, dtype=np.float64), axis, -1)
    y = np.asarray(y, dtype=np.float64)
    S = x.shape[-1]
    if S < 1:
        raise ValueError("`samples` holds no sample.")
    term1 = np.abs(x - y[..., None]).mean(axis=-1)
    if S == 1:
        return term1
    xs = np.sort(x, axis=-1)
    weights = 2.0 * np.arange(1, S + 1) - S - 1.0
    pair_sum = xs @ weights  # sum over pairs i < j of |x_i - x_j|
    return term1 - pair_sum / (S * (S - 1.0))
