"""Helpers shared by the plotting functions: figure set-up, and the figure-output contract (save, return)."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import os
import re
from typing import Any

import numpy as np

from sthinge._docs import _fill


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


_OUTPUT = (  # the figure-output parameters of every plotting function, in the order they are listed
    inspect.Parameter("save", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="str | os.PathLike | None"),
    inspect.Parameter("return_fig", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
    inspect.Parameter("dpi", inspect.Parameter.KEYWORD_ONLY, default=100, annotation="int"),
    inspect.Parameter("overwrite", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
)


def _figure_output(draw):
    """Decorator: the public plotting function made of ``draw``, which only draws and returns its Figure.

    The function takes ``draw``'s arguments and the keyword-only ``save``, ``return_fig``, ``dpi`` and ``overwrite``
    (in its signature, and documented after ``draw``'s parameters, followed by the Returns section). It checks them
    before ``draw`` runs (an existing ``save`` without ``overwrite``, a folder that refuses writes, a bad ``dpi``
    are errors before anything is drawn or read), saves the figure atomically if ``save`` is given and returns it if
    ``return_fig``. The shared entries (``%(name)s`` markers) of the docstring are filled as by
    :func:`sthinge._docs._doc`.
    """
    sig = inspect.signature(draw)

    @functools.wraps(draw)
    def plot(*args, **kwargs):
        output = {p.name: kwargs.pop(p.name, p.default) for p in _OUTPUT}
        _check_output(output["save"], output["overwrite"], output["dpi"])
        fig = draw(*args, **kwargs)
        if output["save"] is not None:
            from sthinge._utils import _atomic_path

            with _atomic_path(output["save"]) as tmp:
                fig.savefig(tmp, dpi=output["dpi"], bbox_inches="tight")
        return fig if output["return_fig"] else None

    returns = "Figure | None"
    plot.__signature__ = sig.replace(parameters=[*sig.parameters.values(), *_OUTPUT], return_annotation=returns)
    plot.__annotations__ = {**draw.__annotations__, **{p.name: p.annotation for p in _OUTPUT}, "return": returns}
    if draw.__doc__:  # None under python -OO
        plot.__doc__ = _fill(_with_output_doc(draw.__doc__, draw.__name__))
    return plot


def _with_output_doc(doc: str, name: str) -> str:
    """``doc`` with the output parameters' marker at the end of its Parameters section and the Returns section's
    marker after it."""
    lines = doc.split("\n")
    heads = [i - 1 for i in range(1, len(lines)) if re.fullmatch(r"\s*-{3,}\s*", lines[i]) and lines[i - 1].strip()]
    titles = [lines[i].strip() for i in heads]
    if "Parameters" not in titles or "Returns" in titles:  # pragma: no cover - programming error
        raise ValueError(f"{name}: the docstring of a plotting function needs a Parameters section and no Returns.")
    at = titles.index("Parameters")
    end = heads[at + 1] if at + 1 < len(heads) else len(lines)
    while not lines[end - 1].strip():
        end -= 1
    indent = re.match(r"\s*", lines[heads[at]])[0]
    lines[end:end] = [f"{indent}%(save_params)s", "", f"{indent}%(returns_fig)s"]
    return "\n".join(lines)


def _check_output(save: str | os.PathLike | None, overwrite: bool, dpi: int) -> None:
    """Check, before anything is drawn, that ``save`` can be written: an existing file only with ``overwrite``,
    a folder that refuses writes fails now; and that ``dpi`` is a resolution."""
    if save is not None:
        from sthinge._utils import _check_output_path

        _check_output_path("save", save, overwrite=overwrite)
    elif not isinstance(overwrite, bool):
        raise TypeError(f"`overwrite` must be True or False, got {overwrite!r}.")
    if isinstance(dpi, bool) or not isinstance(dpi, numbers.Real) or not math.isfinite(dpi) or dpi <= 0:
        raise ValueError(f"`dpi` must be a positive number, got {dpi!r}.")


def _as_list(name: str, value: Any) -> list[str]:
    from sthinge._utils import _check_names

    return _check_names(name, value)
