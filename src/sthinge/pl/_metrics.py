"""``pl.metrics``: per-section metrics of several methods as box or strip plots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from sthinge.pl._utils import _axes_grid, _figure_output

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure


@_figure_output
def metrics(
    table: pd.DataFrame,
    *,
    metric: str = "pcc50",
    by: str | None = "method",
    kind: Literal["box", "strip"] = "box",
    order: Sequence[str] | None = None,
    paired: bool = True,
    figsize: tuple[float, float] | None = None,
    ax: Any = None,
) -> Figure:
    """Plot a metric per group (method) with one point per row (section), as in the paper's Fig. 2.

    Parameters
    ----------
    table
        Results of :func:`sthinge.tl.evaluate` or :func:`sthinge.tl.cross_validate`; several methods concatenated
        (``pd.concat([hinge, ridge])``) are told apart by the column ``by``.
    metric
        Column to plot, e.g. ``"pcc50"``, ``"mse"``, ``"ssim"``.
    by
        Column (or the index name) grouping rows, default ``"method"``; ``None`` plots all rows as one group.
    kind
        ``"box"`` (box plot with the points on top) or ``"strip"`` (points and the median).
    order
        Order of the groups (default: order of appearance).
    paired
        Join the points of the same row key (the index, e.g. the section) across groups with a thin line.
    %(figsize_ax)s

    Examples
    --------
    >>> st.pl.metrics(pd.concat([hinge_cv, ridge_cv]), metric="pcc50")  # doctest: +SKIP
    """
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`table` must be a DataFrame of results, got {type(table).__name__}.")
    if kind not in ("box", "strip"):
        raise ValueError(f"`kind` must be one of ['box', 'strip'], got {kind!r}.")
    if table.shape[0] == 0:
        raise ValueError("`table` is empty (no rows): there is nothing to plot.")
    if metric not in table.columns:
        numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]
        raise KeyError(f"`metric` {metric!r} is not a column of `table`; numeric columns: {numeric}.")
    frame = table.copy()
    key_name = frame.index.name or "index"
    frame = frame.reset_index(names=key_name) if key_name not in frame.columns else frame.reset_index(drop=True)
    if by is None:
        groups = pd.Series("all", index=frame.index)
    elif by in frame.columns:
        groups = frame[by].astype(str)
    else:
        raise KeyError(f"`by` {by!r} is neither a column nor the index of `table`; columns: {list(table.columns)}.")
    present = list(dict.fromkeys(groups))
    if order is None:
        order = present
    else:
        order = [str(o) for o in order]
        unknown = [o for o in order if o not in present]
        if unknown:
            raise ValueError(f"`order` {unknown} not among the groups {present}.")
        if not order:
            raise ValueError(f"`order` is empty; give some of the groups {present}.")
    values = pd.to_numeric(frame[metric], errors="coerce")
    shown = values[groups.isin(order)]
    if not shown.notna().any():
        raise ValueError(
            f"`table` column {metric!r} holds no numeric value in the groups {order} (all missing or "
            "not numbers): there is nothing to plot."
        )

    fig, (ax,) = _axes_grid(1, 1, ax, panel_size=(1.2 + 1.1 * len(order), 4.0), figsize=figsize)
    data = [values[groups == o].dropna().to_numpy() for o in order]
    rng = np.random.default_rng(0)
    if kind == "box":
        ax.boxplot(data, positions=np.arange(len(order)), widths=0.5, showfliers=False, medianprops={"color": "black"})
    else:
        for i, d in enumerate(data):
            if d.size:
                ax.hlines(np.median(d), i - 0.3, i + 0.3, color="black", lw=2)
    xs = {}
    for i, o in enumerate(order):
        sel = (groups == o) & values.notna()
        jitter = rng.uniform(-0.12, 0.12, int(sel.sum()))
        x = i + jitter
        ax.scatter(x, values[sel], s=18, zorder=3, alpha=0.85, color=f"C{i % 10}")
        xs[o] = pd.Series(x, index=frame.loc[sel, key_name].astype(str).to_numpy())
    if paired and len(order) > 1 and all(s.index.is_unique for s in xs.values()):
        yv = {o: pd.Series(values[(groups == o) & values.notna()].to_numpy(), index=xs[o].index) for o in order}
        for a, b in zip(order[:-1], order[1:]):
            common = xs[a].index.intersection(xs[b].index)
            for k in common:
                ax.plot([xs[a][k], xs[b][k]], [yv[a][k], yv[b][k]], color="grey", lw=0.6, alpha=0.5, zorder=2)
    ax.set_xticks(range(len(order)), order)
    ax.set_xlim(-0.6, len(order) - 0.4)
    ax.set_ylabel(metric)
    if by is not None:
        ax.set_xlabel(by)
    return fig
