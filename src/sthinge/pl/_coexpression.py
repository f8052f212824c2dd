"""``pl.coexpression``: gene-gene correlation heatmaps of truth and prediction side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sthinge import _constants as K
from sthinge.pl._utils import _figure_output

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

_MAX_LABELS = 40  # gene names are written on the axes up to this many genes


def _cluster_order(corr: np.ndarray) -> np.ndarray:
    """Leaf order of average-linkage clustering on 1 - correlation."""
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    if len(corr) < 3:
        return np.arange(len(corr))
    dist = np.clip(1.0 - corr, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    return leaves_list(linkage(squareform((dist + dist.T) / 2, checks=False), method="average"))


@_figure_output
def coexpression(
    data: AnnData | SpatialData,
    genes: Sequence[str] | None = None,
    *,
    pred_key: str = K.PRED_KEY,
    section: str | None = None,
    method: Literal["pearson", "spearman"] = "pearson",
    cluster: bool = True,
    cmap: str | Any = "RdBu_r",
    truth_layer: str | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Any = None,
    section_key: str = K.SECTION_KEY,
    table_key: str | None = None,
) -> Figure:
    """Heatmaps of the gene-gene correlation of the truth and of the prediction, with their similarity.

    Each cell is the correlation between two genes across the spots (Pearson or Spearman), on a diverging scale
    centred on 0 and fixed to [-1, 1]. Computed by :func:`sthinge.tl.coexpression`; the title gives the Pearson
    correlation between the two matrices' upper triangles and the RMSE between them. Genes are ordered by
    hierarchical clustering of the truth.

    The predicted mean often shows blocks near +1 and -1 where the measurement shows weaker correlations: it
    averages many samples, so it varies smoothly with the tissue and carries none of the measurement's
    spot-to-spot noise, and genes that follow the same tissue pattern become almost perfectly correlated. A note
    under the heatmaps says so.

    Parameters
    ----------
    data
        SpatialData or AnnData holding a prediction.
    genes
        Genes of the panel (default all).
    %(pred_key)s
    section
        Use the spots of this section only (default all predicted spots).
    method
        ``"pearson"`` or ``"spearman"``.
    cluster
        Order genes by average-linkage clustering of the true correlation (else panel order).
    cmap
        Diverging colormap (the scale is fixed to [-1, 1]).
    %(truth_layer)s
    figsize
        Figure size.
    ax
        Two Axes to draw into (truth, prediction) instead of a new figure.
    %(table_params)s

    Examples
    --------
    >>> st.pl.coexpression(sdata, section="A1")  # doctest: +SKIP
    """
    import matplotlib.pyplot as plt

    from sthinge.tl._evaluate import coexpression as _coexpression

    co = _coexpression(
        data,
        pred_key=pred_key,
        genes=genes,
        section=section,
        method=method,
        truth_layer=truth_layer,
        section_key=section_key,
        table_key=table_key,
    )
    order = _cluster_order(co.truth.to_numpy()) if cluster else np.arange(len(co.genes))
    names = [co.genes[i] for i in order]
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=figsize or (10.5, 5.0), constrained_layout=True)
    else:
        axes = list(np.ravel(np.asarray(ax, dtype=object)))
        if len(axes) != 2:
            raise ValueError("`ax` must be a sequence of two Axes (truth, prediction).")
        fig = axes[0].figure
    im = None
    for a, (label, matrix) in zip(axes, (("measured", co.truth), (f"predicted mean ({pred_key})", co.pred))):
        im = a.imshow(matrix.to_numpy()[np.ix_(order, order)], cmap=cmap, vmin=-1.0, vmax=1.0, interpolation="nearest")
        a.set_title(label)
        if len(names) <= _MAX_LABELS:
            a.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            a.set_yticks(range(len(names)), names, fontsize=7)
        else:
            a.set_xticks([])
            a.set_yticks([])
            a.set_xlabel(f"{len(names)} genes")
    fig.colorbar(im, ax=list(axes), shrink=0.8, label=f"{method.capitalize()} correlation between genes across spots")
    where = f"section {co.section}" if co.section is not None else f"{co.n_spots} spots"
    fig.suptitle(f"Co-expression ({where}): similarity r = {co.similarity:.3f}, RMSE = {co.rmse:.3f}")
    fig.supxlabel(
        "The predicted mean averages many samples, so it is smoother than the measurement and its genes "
        "correlate more strongly (blocks near \N{PLUS-MINUS SIGN}1).",
        fontsize=8,
        color="0.3",
    )
    return fig
