"""``pp.normalize``: log-transform raw counts into a layer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_choice, _check_overwrite
from sthinge.pp._common import _check_bool, _check_counts, _check_key, _get_matrix, _log1p_cp10k, _table_for

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

TRANSFORMS = ("log1p_cp10k", "log2_raw")
TARGET_SUM = 1e4


@_doc
def normalize(
    data: AnnData | SpatialData,
    *,
    transform: Literal["log1p_cp10k", "log2_raw"] = "log1p_cp10k",
    layer: str | None = None,
    key_added: str = K.NORM_LAYER,
    overwrite: bool = False,
    allow_non_integer: bool = False,
    table_key: str | None = None,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Log-transform raw counts into a new layer, leaving the counts untouched.

    ``"log1p_cp10k"`` (default) is :math:`\\ln(1 + 10^4 \\, x_{ij} / \\sum_k x_{ik})` with the library size
    summed over **all** genes of the spot, the scale the frozen CellFM backbone saw in pre-training (see Method,
    :ref:`method-data`) and what ``scanpy.pp.normalize_total(target_sum=1e4)`` + ``log1p`` gives. CellFM's own
    pipeline sums over the vocabulary genes only; over all genes the value of a gene does not depend on
    which panel is later chosen, so the same layer serves every panel. ``"log2_raw"`` is
    :math:`\\log_2(1 + x_{ij})`, the official HINGE code's transform (no library-size normalisation).
    Spots with zero counts get zeros (logged).

    Parameters
    ----------
    data
        AnnData or SpatialData (its table) holding raw integer counts.
    transform
        ``"log1p_cp10k"`` or ``"log2_raw"``.
    layer
        Layer with the raw counts; ``None`` uses ``X``.
    key_added
        Name of the layer written; never the layer holding the counts.
    overwrite
        Replace an existing ``layers[key_added]``; without it, an existing layer of that name is an error
        (raised before any work). Not needed with ``copy=True``.
    allow_non_integer
        Accept non-integer (but finite, non-negative) counts, e.g. ambient-corrected estimates. By default
        non-integer values are refused because they usually mean the data are already normalised.
    %(table_key)s
    %(copy)s

    Returns
    -------
    ``None``; with ``copy=True`` the modified copy of ``data`` (a SpatialData for a SpatialData). Writes, into the
    table:

    - ``layers[key_added]``: float32 transformed values (sparse if the counts are sparse);
    - ``uns["sthinge_normalize"]``: ``{"transform", "source_layer", "key_added", "log_base"}``, plus
      ``"target_sum"`` for ``log1p_cp10k``.

    Raises ``ValueError`` for NaN / infinite / negative or (unless ``allow_non_integer``) non-integer counts,
    before anything is written.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10)
    >>> st.pp.normalize(sdata)
    >>> sdata.tables["table"].layers["sthinge_log1p"].shape
    (16, 10)
    """
    transform = _check_choice("transform", transform, TRANSFORMS)
    key_added = _check_key("key_added", key_added)
    allow_non_integer = _check_bool("allow_non_integer", allow_non_integer)
    source, table, copied = _table_for(data, table_key, copy)
    if layer is not None and key_added == layer:
        raise ValueError(
            f"`key_added` {key_added!r} names the layer holding the counts (`layer`); it is never "
            "replaced. Choose another name."
        )
    if not copy:
        _check_overwrite(f"`key_added` {key_added!r}: `layers[{key_added!r}]`", key_added in source.layers, overwrite)
    if source.n_obs == 0 or source.n_vars == 0:
        what = "spots (the table has 0 rows)" if source.n_obs == 0 else "genes (the table has 0 columns)"
        raise ValueError(f"`data` has no {what}; nothing to normalise.")
    counts = _get_matrix(source, layer)
    what = f"`layers[{layer!r}]`" if layer is not None else "`X`"
    _check_counts(counts, what=f"{what} (raw counts)", allow_non_integer=allow_non_integer)

    if transform == "log1p_cp10k":
        out = _log1p_cp10k(counts, TARGET_SUM)
        totals = np.asarray(counts.sum(axis=1)).ravel()
        if (totals == 0).any():
            logg.warning(f"{int((totals == 0).sum())} spot(s) have zero counts; their normalised values are 0.")
    else:
        import scipy.sparse as sp

        if sp.issparse(counts):
            out = sp.csr_matrix(counts, dtype=np.float32, copy=True)
            out.data = np.log2(1.0 + out.data).astype(np.float32)
        else:
            out = np.log2(1.0 + np.asarray(counts, dtype=np.float32))

    table.layers[key_added] = out
    table.uns[K.UNS_NORMALIZE] = {
        "transform": transform,
        "source_layer": "X" if layer is None else layer,
        "key_added": key_added,
        "log_base": "e" if transform == "log1p_cp10k" else "2",
    }
    if transform == "log1p_cp10k":
        table.uns[K.UNS_NORMALIZE]["target_sum"] = TARGET_SUM
    logg.info(f"normalize: wrote layers[{key_added!r}] ({transform}).")
    return copied
