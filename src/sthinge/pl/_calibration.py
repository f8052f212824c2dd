"""``pl.calibration``: reliability diagram of prediction intervals, nominal against empirical coverage."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sthinge.pl._utils import _axes_grid, _figure_output

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_COVERAGE = re.compile(r"^coverage(\d+(?:\.\d+)?)$")


def _coverage_columns(frame: pd.DataFrame) -> dict[float, str]:
    """``{nominal level: column}`` of the ``coverage<L>`` columns of a table of :func:`sthinge.tl.evaluate`."""
    out = {}
    for col in frame.columns:
        match = _COVERAGE.match(str(col))
        if match:
            out[round(float(match.group(1)) / 100.0, 10)] = str(col)
    return dict(sorted(out.items()))


def _named_tables(results: tuple, labels: Sequence[str] | None, by: str | None) -> list[tuple[str, pd.DataFrame]]:
    """The results as ``[(method, table)]``: a dict's items, or each DataFrame (split by the column ``by`` where it
    holds several methods)."""
    if len(results) == 1 and isinstance(results[0], Mapping):
        if labels is not None:
            raise ValueError("`labels` cannot be combined with a dict of results: the dict's keys name the methods.")
        items = [(str(k), v) for k, v in results[0].items()]
        if not items:
            raise ValueError("`results` is an empty dict: there is nothing to plot.")
    else:
        if not results:
            raise ValueError("`results`: give at least one table of `tl.evaluate` (or a dict {method: table}).")
        if labels is not None:
            labels = [labels] if isinstance(labels, str) else [str(v) for v in labels]
            if len(labels) != len(results):
                raise ValueError(f"`labels` has {len(labels)} name(s) for {len(results)} table(s) in `results`.")
        items = []
        for i, frame in enumerate(results):
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(
                    f"`results` must be DataFrames of `tl.evaluate` / `tl.cross_validate` or one dict "
                    f"{{method: DataFrame}}; got {type(frame).__name__} (the output of `tl.compare` is a "
                    "test, not coverages)."
                )
            methods = list(dict.fromkeys(frame[by].astype(str))) if by is not None and by in frame.columns else []
            if len(methods) > 1:  # e.g. pd.concat of several cross-validations
                prefix = f"{labels[i]}: " if labels is not None else ""
                items += [(prefix + m, frame[frame[by].astype(str).to_numpy() == m]) for m in methods]
                continue
            if labels is not None:
                name = labels[i]
            elif methods:
                name = methods[0]
            else:
                name = str(frame.attrs.get("pred_key") or f"result {i + 1}")
            items.append((name, frame))
    for name, frame in items:
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"`results` {name!r} must be a DataFrame of `tl.evaluate`, got {type(frame).__name__}.")
    names = [n for n, _ in items]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"`results`: the methods {dup} appear more than once; name them with `labels=` or a dict.")
    return items


def _empirical(frame: pd.DataFrame, column: str) -> float:
    """Coverage over all rows: weighted by ``n_spots * n_genes`` where the table has them (per-section summaries
    pool to the fraction of all spot-gene values covered), else the plain mean (e.g. per-gene tables)."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=float)
    ok = np.isfinite(values)
    if not ok.any():
        return float("nan")
    if {"n_spots", "n_genes"} <= set(frame.columns):
        w = pd.to_numeric(frame["n_spots"], errors="coerce") * pd.to_numeric(frame["n_genes"], errors="coerce")
        w = w.to_numpy(dtype=float)
        if np.isfinite(w[ok]).all() and w[ok].sum() > 0:
            return float(np.average(values[ok], weights=w[ok]))
    return float(values[ok].mean())


@_figure_output
def calibration(
    *results: pd.DataFrame | Mapping[str, pd.DataFrame],
    labels: Sequence[str] | None = None,
    levels: Sequence[float] | None = None,
    by: str | None = "method",
    figsize: tuple[float, float] | None = None,
    ax: Any = None,
) -> Figure:
    """Reliability diagram: the empirical coverage of each method's central intervals against their nominal level.

    One line per method through its ``coverage<L>`` columns (written by :func:`sthinge.tl.evaluate` for a
    prediction with an uncertainty: HINGE's samples or std, the baselines' Gaussian std), and the diagonal
    (dashed) where a calibrated method lies. Below the diagonal the intervals are too narrow (overconfident),
    above it too wide. Each point pools the rows of its table: per-section results are weighted by
    ``n_spots * n_genes`` (the fraction of all spot-gene values covered), other tables (per gene) are averaged.
    The legend gives each method's ``interval_method`` (``"samples"``, ``"gaussian"``, ``"layers"``) where the
    table has one. Read it together with the interval widths (``width<L>``) and the ``crps``.

    Parameters
    ----------
    *results
        Tables of :func:`sthinge.tl.evaluate` (or :func:`sthinge.tl.cross_validate`), one per method, or one dict
        ``{method: table}``. A table whose column ``by`` holds several methods (``pd.concat`` of cross-validations)
        is split into one line per method. (The output of :func:`sthinge.tl.compare` is a test, not coverages, and
        is refused.)
    labels
        Names of the methods, one per table (default: the table's single ``by`` value, else its
        ``attrs["pred_key"]``, else ``"result <i>"``); not with a dict.
    levels
        Nominal levels (in (0, 1)) to draw (default: every ``coverage<L>`` column found).
    by
        Column naming the method in a table, default ``"method"``; ``None`` never splits a table.
    %(figsize_ax)s

    Examples
    --------
    >>> hinge = st.tl.evaluate(sdata, pred_key="sthinge")  # doctest: +SKIP
    >>> ridge = st.tl.evaluate(sdata, pred_key="ridge")  # doctest: +SKIP
    >>> st.pl.calibration({"HINGE": hinge, "ridge": ridge}, save="calibration.png")  # doctest: +SKIP
    >>> st.pl.calibration(pd.concat([hinge_cv, ridge_cv]))  # cross-validations, split by "method"  # doctest: +SKIP
    """
    from sthinge.tl._intervals import check_levels

    items = _named_tables(results, labels, by)
    columns = {}
    for name, frame in items:
        cols = _coverage_columns(frame)
        if not cols:
            raise ValueError(
                f"`results` {name!r} has no coverage columns ('coverage50', 'coverage90', ...): evaluate a prediction "
                "that has an uncertainty (a std, samples or quantile layers) with `tl.evaluate`."
            )
        if frame.shape[0] == 0:
            raise ValueError(f"`results` {name!r} is empty (no rows): there is nothing to plot.")
        columns[name] = cols
    found = sorted({lv for cols in columns.values() for lv in cols})
    if levels is None:
        chosen = found
    else:
        chosen = sorted(check_levels(levels, "levels"))
        unknown = [lv for lv in chosen if lv not in found]
        if unknown:
            raise ValueError(
                f"`levels` {[float(v) for v in unknown]} have no coverage column in `results`; available levels: "
                f"{[float(v) for v in found]} (evaluate with `tl.evaluate(..., levels=...)` to add others)."
            )

    fig, (ax,) = _axes_grid(1, 1, ax, panel_size=(4.6, 4.2), figsize=figsize)
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="ideal", zorder=1)
    for i, (name, frame) in enumerate(items):
        cols = columns[name]
        x = [lv for lv in chosen if lv in cols]
        y = [_empirical(frame, cols[lv]) for lv in x]
        how = (
            list(dict.fromkeys(frame["interval_method"].dropna().astype(str)))
            if "interval_method" in frame.columns
            else []
        )
        label = f"{name} ({how[0]})" if len(how) == 1 else name
        ax.plot(x, y, marker="o", color=f"C{i % 10}", label=label, zorder=3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    return fig
