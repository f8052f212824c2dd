"""Helpers shared by the plotting functions: figure set-up, saving and returning."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np


def _axes_grid(n: int, ncols: int, ax: Any, *, panel_size: tuple[float, float], figsize=None):
    """Return ``(fig, [axes])`` with ``n`` panels: new axes on a grid, or the ``ax`` given (one Axes or n of them)."""
    import matplotlib.pyplot as plt
    from matplotlib.axes import Axes

    if ax is not None:
        axes = [ax] if isinstance(ax, Axes) else list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != n or not all(isinstance(a, Axes) for a in axes):
            raise ValueError(f"`ax` must be {'an Axes' if n == 1 else f'a sequence of {n} Axes'} for {n} panel(s).")
        return axes[0].figure, axes
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    if figsize is None:
        figsize = (panel_size[0] * ncols, panel_size[1] * nrows)
    fig, grid = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False, constrained_layout=True)
    axes = list(grid.ravel())
    for extra in axes[n:]:
        extra.remove()
    return fig, axes[:n]


def _finish(fig, *, save: str | os.PathLike | None, return_fig: bool, dpi: int | None = None):
    """Save ``fig`` atomically if ``save`` is given; return it if ``return_fig``."""
    if save is not None:
        from sthinge._utils import _atomic_path

        with _atomic_path(save) as tmp:
            fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return fig if return_fig else None


def _check_save(save: str | os.PathLike | None, overwrite: bool = False) -> None:
    """Check, before anything is drawn, that ``save`` can be written: an existing file only with ``overwrite``,
    a folder that refuses writes fails now."""
    if save is not None:
        from sthinge._utils import _check_output_path

        _check_output_path("save", save, overwrite=overwrite)
    elif not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False, got {overwrite!r}.")


def _as_list(name: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence | np.ndarray):
        raise TypeError(f"`{name}` must be a string or a list of strings, got {type(value).__name__}.")
    out = [str(v) for v in value]
    if not out:
        raise ValueError(f"`{name}` is empty.")
    return out
