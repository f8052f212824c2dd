"""``pl.history``: training and validation curves of a fitted model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge.pl._utils import _as_list, _axes_grid, _figure_output

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

_DEFAULT_KEYS = ("train_loss", "val", "val_score")
_VAL_LABELS = {"mse": "validation MSE", "loss": "validation loss"}
_LABELS = {"train_loss": "training loss", "val_score": "validation R\N{SUPERSCRIPT TWO}", "val_loss": "validation loss"}


@_figure_output
def history(
    model: Any,
    *,
    keys: Sequence[str] | None = None,
    val_metric: str | None = None,
    show_lr: bool = True,
    logy: bool = False,
    figsize: tuple[float, float] | None = None,
    ax: Any = None,
) -> Figure:
    """Plot the per-epoch training loss and validation metric of a model (``model.history``).

    Parameters
    ----------
    model
        A :class:`sthinge.tl.HingeModel` (or anything with a ``history`` list, e.g. an MLP baseline), or the
        history itself: a list of dicts with ``epoch``, ``train_loss``, ``val``, ``lr``.
    keys
        Entries to draw (default those present among ``"train_loss"``, ``"val"``, ``"val_score"``).
    val_metric
        What the history's ``"val"`` is, for its label: ``"mse"`` ("validation MSE": the MSE of predictions sampled
        for the validation spots, :func:`sthinge.tl.fit`'s default) or ``"loss"`` ("validation loss": the masked
        diffusion loss, ``tl.fit(val_metric="loss")``). Default: the model's ``val_metric`` if it records one, else
        ``"mse"``; pass ``"loss"`` for a model trained with ``val_metric="loss"``.
    show_lr
        Draw the learning rate on a secondary axis when the history has ``lr``. The legend sits above the plot,
        outside it, so it covers no curve.
    logy
        Logarithmic y axis.
    %(figsize_ax)s

    Examples
    --------
    >>> model = st.tl.fit(sdata, backbone="cellfm-80m", weights="cellfm80m.ckpt")  # doctest: +SKIP
    >>> st.pl.history(model)  # doctest: +SKIP
    """
    hist = getattr(model, "history", model)
    if not isinstance(hist, list | tuple) or not all(isinstance(h, dict) for h in hist):
        raise TypeError("`model` must have a `history` list of dicts (epoch, train_loss, val, lr), or be that list.")
    if not hist:
        raise ValueError("`model.history` is empty: the model has not been trained.")
    present = list(dict.fromkeys(k for h in hist for k in h))
    if keys is None:
        keys = [k for k in _DEFAULT_KEYS if k in present]
        if not keys:
            raise ValueError(f"`model.history` holds none of {list(_DEFAULT_KEYS)}; entries: {present}.")
    else:
        keys = _as_list("keys", keys)
        unknown = [k for k in keys if k not in present]
        if unknown:
            raise KeyError(f"`keys` {unknown} not in the history; entries: {present}.")
    if val_metric is None:
        val_metric = getattr(model, "val_metric", None) or "mse"
    if val_metric not in _VAL_LABELS:
        raise ValueError(f"`val_metric` must be one of {list(_VAL_LABELS)} or None, got {val_metric!r}.")
    names = {**_LABELS, "val": _VAL_LABELS[val_metric]}
    epochs = np.array([h.get("epoch", i) for i, h in enumerate(hist)], dtype=float)
    fig, (ax,) = _axes_grid(1, 1, ax, panel_size=(5.5, 3.8), figsize=figsize)
    for i, key in enumerate(keys):
        y = np.array([h.get(key, np.nan) for h in hist], dtype=float)
        ok = np.isfinite(y)
        ax.plot(epochs[ok], y[ok], marker="o", ms=3, label=names.get(key, key), color=f"C{i}")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss / metric")
    handles, labels = ax.get_legend_handles_labels()
    if show_lr and "lr" in present:
        lr = np.array([h.get("lr", np.nan) for h in hist], dtype=float)
        twin = ax.twinx()
        twin.plot(epochs, lr, color="grey", ls="--", lw=1, label="learning rate")
        twin.set_ylabel("learning rate")
        if np.all(lr[np.isfinite(lr)] > 0):
            twin.set_yscale("log")
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    # above the axes, outside them: inside, it covered the learning-rate line
    ax.legend(
        handles,
        labels,
        loc="lower left",
        bbox_to_anchor=(0.0, 1.01, 1.0, 0.1),
        mode="expand",
        ncols=min(len(labels), 4),
        borderaxespad=0.0,
        frameon=False,
        fontsize=9,
    )
    return fig
