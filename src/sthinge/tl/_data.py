"""Gathering model inputs from AnnData / SpatialData tables (shared by fit, predict, evaluate and pl)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from sthinge import _constants as K


def _panel(table, genes_key: str) -> list[str]:
    """The ordered gene panel that ``pp.select_genes`` wrote: ``uns[genes_key]["genes"]`` (an older sthinge's list
    ``uns[genes_key]`` is read too)."""
    if genes_key not in table.uns:
        raise KeyError(
            f"`genes_key` {genes_key!r} not found in `uns`: run `sthinge.pp.select_genes(data)` first "
            "(or pass the key it wrote)."
        )
    panel = table.uns[genes_key]
    if isinstance(panel, Mapping):
        panel = panel.get("genes", [])
    panel = [str(g) for g in np.asarray(panel).ravel().tolist()]
    if not panel:
        raise ValueError(f"The gene panel `uns[{genes_key!r}]` is empty.")
    missing = [g for g in panel if g not in table.var_names]
    if missing:
        raise KeyError(f"{len(missing)} panel gene(s) are not in `var_names`: {missing[:5]}.")
    return panel


def _panel_symbols(table, genes_key: str, panel: list[str]) -> list[str]:
    """CellFM vocabulary symbols of the panel (differ from var names for Ensembl-indexed tables).

    Read from ``uns[genes_key]["params"]["symbols"]``, or from ``uns[f"{genes_key}_params"]``, where an older
    sthinge kept them.
    """
    entry = table.uns.get(genes_key)
    params = entry.get("params") if isinstance(entry, Mapping) else None
    if not isinstance(params, Mapping):
        params = table.uns.get(f"{genes_key}_params", {})
    symbols = list(params.get("symbols", [])) if isinstance(params, Mapping) else []
    if len(symbols) == len(panel) and all(isinstance(s, str) and s for s in symbols):
        return [str(s) for s in symbols]
    return list(panel)


def _default_layer(table) -> str:
    info = table.uns.get(K.UNS_NORMALIZE)
    if isinstance(info, dict) and info.get("key_added") in table.layers:
        return str(info["key_added"])
    if K.NORM_LAYER in table.layers:
        return K.NORM_LAYER
    raise KeyError(
        "No normalised layer found: run `sthinge.pp.normalize(data)` first, or pass `layer=` naming a layer of "
        "log-normalised expression."
    )


def _dense_rows(matrix, rows: np.ndarray | slice, cols: np.ndarray) -> np.ndarray:
    import scipy.sparse as sp

    sub = matrix[rows][:, cols]
    if sp.issparse(sub):
        sub = sub.toarray()
    return np.asarray(sub, dtype=np.float32)


def _expression(table, layer: str | None, genes: Sequence[str], rows=slice(None), *, check_raw: bool = True):
    """(n, G) float32 expression of ``genes`` from ``layer`` (None = the layer ``pp.normalize`` wrote)."""
    layer = _default_layer(table) if layer is None else layer
    if layer not in table.layers:
        raise KeyError(f"`layer` {layer!r} not found; available layers: {list(table.layers)}.")
    cols = table.var_names.get_indexer(list(genes))
    x = _dense_rows(table.layers[layer], rows, cols)
    if not np.isfinite(x).all():
        raise ValueError(f"`layers[{layer!r}]` holds NaN or infinite values in the gene panel.")
    if (x < 0).any():
        raise ValueError(f"`layers[{layer!r}]` holds negative values; expected log-normalised expression.")
    if check_raw and x.size and np.array_equal(x, np.round(x)) and x.max() > 20:
        raise ValueError(
            f"`layers[{layer!r}]` looks like raw integer counts; run `sthinge.pp.normalize(data)` and fit on the "
            "layer it writes."
        )
    return x, layer


def _embedding_array(table, embedding_key: str):
    """``obsm[embedding_key]`` as a 2-D array, not copied (a DataFrame gives its values); clear errors otherwise."""
    if embedding_key not in table.obsm:
        raise KeyError(
            f"`embedding_key` {embedding_key!r} not found in `obsm` (available: {list(table.obsm)}); run "
            "`sthinge.pp.embed_histology(data)` first."
        )
    emb = table.obsm[embedding_key]
    emb = emb.to_numpy() if isinstance(emb, pd.DataFrame) else np.asarray(emb)
    if emb.ndim != 2:
        raise ValueError(f"`obsm[{embedding_key!r}]` must be 2-D (spots x features), got shape {emb.shape}.")
    return emb


def _embedding(table, embedding_key: str, rows=slice(None)) -> np.ndarray:
    """The float32 embedding of ``rows``, checked to be finite."""
    emb = np.asarray(_embedding_array(table, embedding_key)[rows], dtype=np.float32)
    if not np.isfinite(emb).all():
        raise ValueError(f"`obsm[{embedding_key!r}]` holds NaN or infinite values.")
    return emb


def _section_rows(table, sections: Sequence[str] | str | None, section_key: str, arg: str) -> np.ndarray:
    """Row indices of ``sections`` (all rows when None)."""
    if sections is None:
        return np.arange(table.n_obs)
    from sthinge._utils import _check_names, _check_no_repeats

    sections = _check_names(arg, sections, what="section names", hint="; give at least one section, or None for all")
    _check_no_repeats(arg, sections)
    if section_key not in table.obs:
        raise KeyError(f"`{arg}` needs the obs column {section_key!r} naming each spot's section; set `section_key`.")
    values = table.obs[section_key].astype(str).to_numpy()
    present = set(values)
    missing = [s for s in sections if s not in present]
    if missing:
        raise ValueError(f"`{arg}` {missing} not found in obs[{section_key!r}]; available: {sorted(present)}.")
    rows = np.flatnonzero(np.isin(values, list(sections)))
    if rows.size == 0:
        raise ValueError(f"`{arg}` selects no spots.")
    return rows


def _find_prediction(data: Any, pred_key: str = K.PRED_KEY, *, table_key: str | None = None):
    """Locate a prediction written by ``tl.predict`` and the table holding its truth.

    Returns
    -------
    ``(mean, std, source)``: DataFrames (spots x genes) of the predicted mean and standard deviation (std may be
    None) indexed like the source table's rows, and the source table (where the truth lives).
    """
    from anndata import AnnData

    from sthinge._utils import _is_spatialdata, _resolve_table

    std_key = f"{pred_key}{K.STD_SUFFIX}"
    if isinstance(data, AnnData):
        if pred_key not in data.obsm:
            raise KeyError(f"Prediction `{pred_key}` not found in `obsm`; run `sthinge.tl.predict` first.")
        mean = data.obsm[pred_key]
        std = data.obsm.get(std_key)
        return mean, std, data
    if _is_spatialdata(data):
        if pred_key not in data.tables:
            raise KeyError(f"Prediction table {pred_key!r} not found; run `sthinge.tl.predict` first.")
        pred = data.tables[pred_key]
        source_key = pred.uns.get(pred_key, {}).get("source_table", table_key)
        source, _ = _resolve_table(data, source_key if source_key in data.tables else table_key)
        mean = pd.DataFrame(_to_dense(pred.layers.get(pred_key, pred.X)), index=pred.obs_names, columns=pred.var_names)
        std = None
        if std_key in pred.layers:
            std = pd.DataFrame(_to_dense(pred.layers[std_key]), index=pred.obs_names, columns=pred.var_names)
        return mean, std, source
    raise TypeError(f"`data` must be an AnnData or a SpatialData object, got {type(data).__name__}.")


def _to_dense(x) -> np.ndarray:
    import scipy.sparse as sp

    return x.toarray() if sp.issparse(x) else np.asarray(x)


def split_rows(n: int, fraction: float, seed: int, *, min_val: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` row indices, each sorted: a random ``fraction`` of ``n`` rows (at least
    ``min_val``, at most ``n - 1``) is held out, drawn with ``numpy.random.default_rng(seed)``."""
    order = np.random.default_rng(seed).permutation(n)
    n_val = int(round(fraction * n)) if fraction > 0 else 0
    n_val = min(max(n_val, min_val), n - 1)
    return np.sort(order[n_val:]), np.sort(order[:n_val])
