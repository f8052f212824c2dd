"""``tl.evaluate``, ``tl.coexpression`` and ``tl.compare``: how good a prediction is, and whether one beats another.

Every function reads a prediction in the format that :func:`sthinge.tl.predict` writes (a table ``tables[pred_key]``
of a SpatialData object, or ``obsm[pred_key]`` DataFrames of an AnnData) and the truth from the source table's
log-normalised layer, aligned by ``obs_names``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_choice, _check_names, _is_spatialdata, _resolve_table
from sthinge.tl._intervals import (
    DEFAULT_LEVELS,
    check_levels,
    crps_gaussian,
    crps_samples,
    gaussian_z,
    interval_layer_names,
    interval_quantiles,
    level_label,
)

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

_PCC_K = re.compile(r"^pcc(\d+)$")
_SIMPLE_METRICS = ("pcc", "mse", "mae", "ssim")
_RANK_BY = ("variance", "pcc")
_ALL_LABEL = "all"


# ----------------------------------------------------------------------------------------------------------
# loading a prediction and its truth
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Prediction:
    """A prediction aligned with its truth: arrays are (n, G) over the predicted rows of the source table."""

    genes: list[str]
    mean: np.ndarray
    std: np.ndarray | None
    samples: np.ndarray | None  # (n, S, G)
    truth: np.ndarray | None
    source: Any  # the AnnData holding the truth
    rows: np.ndarray  # row positions of the predicted spots in `source`
    layer: str | None
    info: dict = field(default_factory=dict)
    key: str = ""  # the prediction's name (`pred_key`)
    # quantile layers written with the prediction, (n, G), by their name (``f"{key}_q05"``; see tl._intervals)
    quantiles: dict[str, np.ndarray] = field(default_factory=dict)
    # the split-conformal calibration the prediction was made with (``uns[key]["calibration"]``), gene-aligned
    calibration: Any = None

    @property
    def obs(self) -> pd.DataFrame:
        return self.source.obs.iloc[self.rows]

    @property
    def spatial(self) -> np.ndarray | None:
        if K.SPATIAL_KEY not in self.source.obsm:
            return None
        return np.asarray(self.source.obsm[K.SPATIAL_KEY], dtype=np.float64)[self.rows, :2]


def _dense(x) -> np.ndarray:
    import scipy.sparse as sp

    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _as_str_list(name: str, value: Any) -> list[str]:
    return list(dict.fromkeys(_check_names(name, value)))


def _truth_layer(source, truth_layer: str | None, info: dict) -> str:
    """The layer holding the truth: ``truth_layer``, else the prediction's training layer, else ``pp.normalize``'s."""
    from sthinge.tl._data import _default_layer

    if truth_layer is not None:
        if truth_layer != "X" and truth_layer not in source.layers:
            raise KeyError(f"`truth_layer` {truth_layer!r} not found; available layers: {list(source.layers)} or 'X'.")
        return truth_layer
    trained_on = info.get("training_layer") if isinstance(info, dict) else None
    if trained_on and trained_on in source.layers:
        return str(trained_on)
    return _default_layer(source)


def _load_prediction(
    data: AnnData | SpatialData,
    pred_key: str = K.PRED_KEY,
    *,
    genes: Sequence[str] | str | None = None,
    truth_layer: str | None = None,
    table_key: str | None = None,
    need_truth: bool = True,
) -> _Prediction:
    """Find the prediction ``pred_key`` in ``data``, restrict it to ``genes`` and align the truth with it.

    For an AnnData, rows whose predicted mean is not finite (not predicted) are dropped. For a SpatialData, the
    prediction table's rows are matched to the source table (``uns[pred_key]["source_table"]`` unless
    ``table_key`` is given) by ``obs_names``.
    """
    from anndata import AnnData

    if not isinstance(pred_key, str) or not pred_key:
        raise ValueError(f"`pred_key` must be a non-empty string, got {pred_key!r}.")
    std_key, samples_key = f"{pred_key}{K.STD_SUFFIX}", f"{pred_key}{K.SAMPLES_SUFFIX}"
    quantile_key = re.compile(rf"^{re.escape(pred_key)}_q\d{{2,}}$")  # f"{pred_key}_q05": see tl._intervals
    if isinstance(data, AnnData):
        if table_key is not None:
            raise ValueError("`table_key` only applies to SpatialData input; got an AnnData.")
        if pred_key not in data.obsm:
            hint = ""
            if pred_key in data.layers:
                hint = (
                    " This AnnData looks like a prediction table itself: pass the SpatialData / AnnData that "
                    "holds the truth instead."
                )
            raise KeyError(
                f"`pred_key` {pred_key!r} not found in `obsm` (available: {list(data.obsm)}); run "
                f"`sthinge.tl.predict` first.{hint}"
            )
        frame = data.obsm[pred_key]
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(f"`obsm[{pred_key!r}]` must be a DataFrame (spots x genes) as `tl.predict` writes it.")
        pred_genes = [str(c) for c in frame.columns]
        mean = frame.to_numpy(dtype=np.float64)
        std = data.obsm.get(std_key)
        if isinstance(std, pd.DataFrame):
            std = std.reindex(columns=frame.columns).to_numpy(dtype=np.float64)
        samples = data.obsm.get(samples_key)
        quantiles = {}
        for k in data.obsm:
            if quantile_key.match(str(k)):
                q = data.obsm[k]
                quantiles[str(k)] = (
                    q.reindex(columns=frame.columns).to_numpy(dtype=np.float64)
                    if isinstance(q, pd.DataFrame)
                    else np.asarray(q, dtype=np.float64)
                )
        rows = np.flatnonzero(np.isfinite(mean).all(axis=1))
        if rows.size == 0:
            raise ValueError(f"`obsm[{pred_key!r}]` holds no predicted spot (all rows are NaN).")
        mean = mean[rows]
        std = None if std is None else np.asarray(std, dtype=np.float64)[rows]
        samples = None if samples is None else np.asarray(samples, dtype=np.float64)[rows]
        quantiles = {name: q[rows] if q.ndim == 2 and len(q) == data.n_obs else q for name, q in quantiles.items()}
        source = data
        info = dict(data.uns.get(pred_key, {})) if isinstance(data.uns.get(pred_key), dict) else {}
    elif _is_spatialdata(data):
        tables = list(data.tables.keys())
        if pred_key not in tables:
            raise KeyError(
                f"`pred_key` {pred_key!r}: no such prediction table (tables: {tables}); run `sthinge.tl.predict` "
                "first, or pass the `key_added` it used."
            )
        pred = data.tables[pred_key]
        info = dict(pred.uns.get(pred_key, {})) if isinstance(pred.uns.get(pred_key), dict) else {}
        source_key = table_key if table_key is not None else (info.get("source_table") or None)
        if source_key == pred_key:
            raise ValueError(f"`table_key` {source_key!r} is the prediction itself; name the table holding the truth.")
        if source_key is None and K.TABLE_KEY not in tables:
            others = [t for t in tables if t != pred_key]
            source_key = others[0] if len(others) == 1 else None
        source, _ = _resolve_table(data, source_key)
        if not source.obs_names.is_unique:
            raise ValueError("The source table's `obs_names` are not unique; call `.obs_names_make_unique()` first.")
        rows = source.obs_names.get_indexer(pred.obs_names)
        if (rows < 0).any():
            raise KeyError(
                f"{int((rows < 0).sum())} spot(s) of the prediction {pred_key!r} are not in the source table "
                f"(e.g. {list(pred.obs_names[rows < 0][:3])}); pass `table_key=` naming the table it was predicted "
                "from."
            )
        if pred.n_obs == 0:
            raise ValueError(f"The prediction table {pred_key!r} (`pred_key`) holds no spot.")
        pred_genes = [str(g) for g in pred.var_names]
        mean = _dense(pred.layers[pred_key] if pred_key in pred.layers else pred.X).astype(np.float64)
        std = _dense(pred.layers[std_key]).astype(np.float64) if std_key in pred.layers else None
        samples = np.asarray(pred.obsm[samples_key], dtype=np.float64) if samples_key in pred.obsm else None
        quantiles = {
            str(k): _dense(pred.layers[k]).astype(np.float64) for k in pred.layers if quantile_key.match(str(k))
        }
    else:
        raise TypeError(f"`data` must be an AnnData or a SpatialData object, got {type(data).__name__}.")

    if not np.isfinite(mean).all():
        raise ValueError(f"The prediction {pred_key!r} holds NaN or infinite values in predicted spots.")
    if std is not None and (std.shape != mean.shape or not np.isfinite(std).any()):
        std = None  # an all-NaN std (baselines of earlier versions wrote one): no uncertainty
    if samples is not None and (
        samples.ndim != 3 or samples.shape[0] != mean.shape[0] or samples.shape[2] != mean.shape[1]
    ):
        logg.warning(f"Ignoring the samples of {pred_key!r}: shape {samples.shape} does not match the prediction.")
        samples = None
    for name in [n for n, q in quantiles.items() if q.shape != mean.shape]:
        logg.warning(f"Ignoring the quantile {name!r}: shape {quantiles[name].shape} does not match the prediction.")
        del quantiles[name]

    if genes is not None:
        genes = _as_str_list("genes", genes)
        pos = {g: i for i, g in enumerate(pred_genes)}
        missing = [g for g in genes if g not in pos]
        if missing:
            raise KeyError(
                f"`genes` {missing[:10]} not in the panel of prediction {pred_key!r} ({len(pred_genes)} genes, "
                f"e.g. {pred_genes[:5]})."
            )
        idx = np.array([pos[g] for g in genes], dtype=int)
        mean = mean[:, idx]
        std = None if std is None else std[:, idx]
        samples = None if samples is None else samples[:, :, idx]
        quantiles = {name: q[:, idx] for name, q in quantiles.items()}
    else:
        idx = None
        genes = pred_genes
    calibration = _stored_calibration(info, len(pred_genes), idx, pred_key)

    truth, layer = None, None
    if need_truth:
        layer = _truth_layer(source, truth_layer, info)
        missing = [g for g in genes if g not in source.var_names]
        if missing:
            raise KeyError(f"Predicted gene(s) {missing[:10]} are not in the source table's `var_names`.")
        cols = source.var_names.get_indexer(genes)
        matrix = source.X if layer == "X" else source.layers[layer]
        truth = _dense(matrix[rows][:, cols]).astype(np.float64)
        if not np.isfinite(truth).all():
            raise ValueError(f"The truth (`layers[{layer!r}]`) holds NaN or infinite values.")
    return _Prediction(
        genes=list(genes),
        mean=mean,
        std=std,
        samples=samples,
        truth=truth,
        source=source,
        rows=np.asarray(rows, dtype=int),
        layer=layer,
        info=info,
        key=pred_key,
        quantiles=quantiles,
        calibration=calibration,
    )


def _stored_calibration(info: Any, n_genes: int, idx: np.ndarray | None, key: str):
    """The :class:`~sthinge.tl._conformal.Calibration` stored with a prediction, restricted to the genes ``idx``."""
    from sthinge.tl._conformal import Calibration

    stored = info.get("calibration") if isinstance(info, dict) else None
    if stored is None:
        return None
    try:
        cal = Calibration.from_dict(dict(stored), n_genes)
    except (TypeError, ValueError) as err:
        logg.warning(f"Ignoring the calibration stored with {key!r}: {err}")
        return None
    if idx is not None:
        cal.scale, cal.delta = cal.scale[:, idx], cal.delta[idx]
    return cal


def _labels(obs: pd.DataFrame, key: str | None) -> np.ndarray:
    """Group labels of rows (``"all"`` for every row when ``key`` is None or, for sections, absent)."""
    if key is None or key not in obs:
        return np.full(len(obs), _ALL_LABEL, dtype=object)
    return obs[key].astype(str).to_numpy()


def _ordered_unique(values: np.ndarray, obs: pd.DataFrame, key: str | None) -> list[str]:
    if key is not None and key in obs and isinstance(obs[key].dtype, pd.CategoricalDtype):
        present = set(values)
        return [str(c) for c in obs[key].cat.categories if str(c) in present]
    return [str(v) for v in pd.unique(values)]


# ----------------------------------------------------------------------------------------------------------
# per-gene metrics on arrays (n spots, G genes)
# ----------------------------------------------------------------------------------------------------------
def _nanmean(x: np.ndarray, axis: int | None = None):
    """``np.nanmean`` that returns NaN for all-NaN slices without a warning."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(x, axis=axis)


def _constant(x: np.ndarray) -> np.ndarray:
    """(G,) bool: columns without variation."""
    if x.shape[0] < 2:
        return np.ones(x.shape[1], dtype=bool)
    return np.ptp(x, axis=0) == 0


def _pcc_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of matching columns; NaN where either column is constant."""
    out = np.full(a.shape[1], np.nan)
    ok = ~(_constant(a) | _constant(b))
    if ok.any():
        ac = a[:, ok] - a[:, ok].mean(axis=0)
        bc = b[:, ok] - b[:, ok].mean(axis=0)
        denom = np.sqrt((ac * ac).sum(axis=0) * (bc * bc).sum(axis=0))
        out[ok] = np.clip((ac * bc).sum(axis=0) / denom, -1.0, 1.0)
    return out


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of matching columns (Pearson of average ranks); NaN where either is constant."""
    from scipy.stats import rankdata

    return _pcc_columns(rankdata(a, axis=0), rankdata(b, axis=0))


def _pcc_k(pcc: np.ndarray, truth_var: np.ndarray, k: int, rank_by: str) -> tuple[float, int]:
    """Mean PCC over k genes chosen among those with a finite PCC; returns (value, number of genes used).

    With fewer than k such genes there is no PCC-k: the value is NaN and the number is how many genes have a PCC.
    """
    valid = np.flatnonzero(np.isfinite(pcc))
    if valid.size < k:
        return float("nan"), int(valid.size)
    key = truth_var[valid] if rank_by == "variance" else pcc[valid]
    # stable sort: ties keep the panel order
    chosen = valid[np.argsort(-key, kind="stable")[:k]]
    return float(pcc[chosen].mean()), int(chosen.size)


# ----------------------------------------------------------------------------------------------------------
# SSIM on the spot lattice
# ----------------------------------------------------------------------------------------------------------
def _compress_axis(v: np.ndarray) -> np.ndarray:
    v = v - v.min()
    step = np.gcd.reduce(v[v > 0]) if (v > 0).any() else 1
    return v // max(int(step), 1)


def _steps_from_coords(xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer lattice indices of spot centres given in pixels (square or hexagonal spot arrays)."""
    from scipy.spatial import cKDTree

    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"`obsm[{K.SPATIAL_KEY!r}]` holds NaN or infinite coordinates for {int(bad.sum())} predicted spot(s); the "
            "SSIM needs the spot positions (or obs['array_x'] / obs['array_y']): fix them, or leave 'ssim' out of "
            "`metrics`."
        )
    if len(xy) < 2:
        return np.zeros(len(xy), int), np.zeros(len(xy), int)
    dist, _ = cKDTree(xy).query(xy, k=2)
    d = float(np.median(dist[:, 1]))
    if not np.isfinite(d) or d <= 0:
        return np.zeros(len(xy), int), np.zeros(len(xy), int)
    out = []
    for v in (xy[:, 0], xy[:, 1]):
        s = np.sort(v)
        gaps = np.diff(s)
        big = gaps[gaps > 0.25 * d]
        step = float(big.min()) if big.size else d
        out.append(np.round((v - v.min()) / step).astype(int))
    ix, iy = out
    if (ix.max() + 1) * (iy.max() + 1) > 16 * len(xy):  # rotated or irregular layout: fall back to a d-spaced grid
        ix = np.round((xy[:, 0] - xy[:, 0].min()) / d).astype(int)
        iy = np.round((xy[:, 1] - xy[:, 1].min()) / d).astype(int)
    return ix, iy


def _lattice(obs: pd.DataFrame, spatial: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
    """(iy, ix) lattice cells of the rows: ``obs[array_x/array_y]`` if present, else inferred from ``spatial``."""
    if K.ARRAY_X in obs and K.ARRAY_Y in obs:
        x = pd.to_numeric(obs[K.ARRAY_X], errors="coerce").to_numpy(dtype=np.float64)
        y = pd.to_numeric(obs[K.ARRAY_Y], errors="coerce").to_numpy(dtype=np.float64)
        if np.isfinite(x).all() and np.isfinite(y).all():
            ix, iy = np.round(x).astype(np.int64), np.round(y).astype(np.int64)
            ix, iy = _compress_axis(ix), _compress_axis(iy)
        elif spatial is not None:
            ix, iy = _steps_from_coords(spatial)
        else:
            return None
    elif spatial is not None:
        ix, iy = _steps_from_coords(spatial)
    else:
        return None
    # hexagonal arrays (Visium) use every other column in alternating rows: fold them onto a dense grid
    if len(ix) > 1 and np.unique((ix + iy) % 2).size == 1 and np.unique(iy).size > 1:
        ix = ix // 2
    return iy - iy.min(), ix - ix.min()


def _ssim_columns(truth: np.ndarray, pred: np.ndarray, cells: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Gene-wise SSIM of truth and prediction rasterised on the spot lattice (NaN where truth is constant)."""
    from skimage.metrics import structural_similarity

    G = truth.shape[1]
    out = np.full(G, np.nan)
    if cells is None:
        return out
    iy, ix = cells
    H, W = int(iy.max()) + 1, int(ix.max()) + 1
    win = min(7, H, W)
    win -= 1 - win % 2  # odd
    if win < 3:
        return out
    count = np.zeros((H, W))
    np.add.at(count, (iy, ix), 1.0)
    occupied = count > 0
    safe = np.where(occupied, count, 1.0)
    ok = ~_constant(truth)
    for g in np.flatnonzero(ok):
        t, p = truth[:, g], pred[:, g]
        lo, hi = min(t.min(), p.min()), max(t.max(), p.max())
        grids = []
        for v in (t, p):
            img = np.zeros((H, W))
            np.add.at(img, (iy, ix), (v - lo) / (hi - lo))
            grids.append(img / safe)
        _, smap = structural_similarity(grids[0], grids[1], data_range=1.0, win_size=win, full=True)
        out[g] = float(smap[occupied].mean())
    return out


# ----------------------------------------------------------------------------------------------------------
# evaluate
# ----------------------------------------------------------------------------------------------------------
def _parse_metrics(metrics: Sequence[str]) -> tuple[list[str], list[int]]:
    names = _as_str_list("metrics", metrics)
    ks = []
    for m in names:
        match = _PCC_K.match(m)
        if match:
            k = int(match.group(1))
            if k < 1:
                raise ValueError(f"`metrics`: {m!r} needs k >= 1.")
            ks.append(k)
        elif m not in _SIMPLE_METRICS:
            raise ValueError(
                f"`metrics`: unknown metric {m!r}; allowed: 'pcc<k>' (e.g. 'pcc50', 'pcc200'), {list(_SIMPLE_METRICS)}."
            )
    return names, ks


def _has_uncertainty(p: _Prediction) -> bool:
    """Whether the prediction says how uncertain it is: a std, samples or quantile layers."""
    return p.std is not None or p.samples is not None or bool(p.quantiles)


def _intervals(
    p: _Prediction, levels: Sequence[float], idx: np.ndarray | slice = slice(None)
) -> dict[float, tuple[np.ndarray, np.ndarray, str]]:
    """Central intervals ``{level: (lower, upper, method)}`` of the rows ``idx`` of ``p``, each (n, G).

    Per level, the first that exists: the quantile layers written with the prediction (``"layers"``,
    ``tl._intervals.interval_layer_names``), the split-conformal interval of the calibration stored with it
    (``"conformal"``, from mean and std), the quantiles of the samples (``"samples"``; numpy's default linear
    interpolation), the Gaussian interval mean +- z std (``"gaussian"``). Levels without any are left out.
    """
    out: dict[float, tuple[np.ndarray, np.ndarray, str]] = {}
    from_samples = []
    for level in levels:
        lo_key, hi_key = interval_layer_names(p.key, level)
        if lo_key in p.quantiles and hi_key in p.quantiles:
            out[level] = (p.quantiles[lo_key][idx], p.quantiles[hi_key][idx], "layers")
        elif (
            p.calibration is not None
            and p.std is not None
            and p.calibration.levels[0] <= level <= p.calibration.levels[-1]
        ):
            lo, hi = p.calibration.interval(p.mean[idx], p.std[idx], level)
            out[level] = (lo.astype(np.float64), hi.astype(np.float64), "conformal")
        elif p.samples is not None:
            from_samples.append(level)
        elif p.std is not None:
            half = gaussian_z(level) * p.std[idx]
            out[level] = (p.mean[idx] - half, p.mean[idx] + half, "gaussian")
    if from_samples:  # one pass over the samples for all levels
        qs = [q for level in from_samples for q in interval_quantiles(level)]
        bounds = np.quantile(p.samples[idx], qs, axis=1)
        for i, level in enumerate(from_samples):
            out[level] = (bounds[2 * i], bounds[2 * i + 1], "samples")
    return {level: out[level] for level in levels if level in out}


def _interval_method(methods: dict[float, str]) -> str:
    """One method name if all levels used it, else e.g. ``"layers(90,95)+gaussian(50,80)"``."""
    names = list(dict.fromkeys(methods.values()))
    if len(names) <= 1:
        return names[0] if names else "none"
    return "+".join(f"{m}({','.join(level_label(lv) for lv, how in methods.items() if how == m)})" for m in names)


def _uncertainty_metrics(
    p: _Prediction,
    idx: np.ndarray,
    truth: np.ndarray,
    mean: np.ndarray,
    levels: Sequence[float],
    row: dict,
    per_gene: dict,
) -> None:
    """Add the calibration metrics of the rows ``idx`` to the summary ``row`` and the ``per_gene`` columns."""
    abs_err = np.abs(mean - truth)
    G = truth.shape[1]
    std = p.std[idx] if p.std is not None else (p.samples[idx].std(axis=1) if p.samples is not None else None)
    unc = _spearman_columns(std, abs_err) if std is not None else np.full(G, np.nan)
    per_gene["unc_spearman"] = unc
    row["unc_spearman"] = float(_nanmean(unc))
    if p.samples is not None:
        crps, crps_how = crps_samples(p.samples[idx], truth, axis=1), "samples"
    elif std is not None:
        crps, crps_how = crps_gaussian(mean, std, truth), "gaussian"
    else:  # quantile layers alone do not define the whole distribution
        crps, crps_how = np.full(truth.shape, np.nan), "none"
    per_gene["crps"] = _nanmean(crps, axis=0)
    row["crps"] = float(_nanmean(crps))
    intervals = _intervals(p, levels, idx)
    coverage, width = {}, {}
    for level in levels:
        label = level_label(level)
        if level in intervals:
            lo, hi, _ = intervals[level]
            ok = np.isfinite(lo) & np.isfinite(hi)
            inside = np.where(ok, ((truth >= lo) & (truth <= hi)).astype(float), np.nan)
            w = np.where(ok, hi - lo, np.nan)
        else:
            inside = w = np.full(truth.shape, np.nan)
        per_gene[f"coverage{label}"], coverage[label] = _nanmean(inside, axis=0), float(_nanmean(inside))
        per_gene[f"width{label}"], width[label] = _nanmean(w, axis=0), float(_nanmean(w))
    row.update({f"coverage{k}": v for k, v in coverage.items()})
    row.update({f"width{k}": v for k, v in width.items()})
    methods = {level: how for level, (_, _, how) in intervals.items()}
    row["interval_method"] = _interval_method(methods)
    row["crps_method"] = crps_how
    if 0.9 in methods:  # kept from earlier versions: the method of `coverage90`
        row["coverage90_method"] = methods[0.9]


def _group_metrics(
    p: _Prediction,
    idx: np.ndarray,
    sections: np.ndarray,
    names: list[str],
    rank_by: str,
    label: str,
    levels: Sequence[float] = DEFAULT_LEVELS,
) -> tuple[dict, pd.DataFrame]:
    """Metrics of the rows ``idx`` of ``p`` (one group): a summary row and the per-gene table."""
    truth, mean = p.truth[idx], p.mean[idx]
    G = truth.shape[1]
    err = mean - truth
    t_const, p_const = _constant(truth), _constant(mean)
    pcc = _pcc_columns(truth, mean)
    truth_var = truth.var(axis=0) if len(idx) else np.full(G, np.nan)
    gene_mse, gene_mae = (err**2).mean(axis=0), np.abs(err).mean(axis=0)
    per_gene = {"gene": p.genes, "pcc": pcc, "mse": gene_mse, "mae": gene_mae, "truth_var": truth_var}
    row: dict[str, Any] = {"n_spots": int(len(idx)), "n_genes": int(G)}

    if "ssim" in names:
        spatial = p.spatial
        obs = p.obs.iloc[idx]
        stacks = []
        for s in _ordered_unique(sections[idx], obs, None):
            sub = np.flatnonzero(sections[idx] == s)
            cells = _lattice(obs.iloc[sub], None if spatial is None else spatial[idx][sub])
            stacks.append(_ssim_columns(truth[sub], mean[sub], cells))
        per_gene["ssim"] = _nanmean(np.vstack(stacks), axis=0)

    for m in names:
        match = _PCC_K.match(m)
        if match:
            row[m], row[f"{m}_n_genes"] = _pcc_k(pcc, truth_var, int(match.group(1)), rank_by)
        elif m == "pcc":
            row["pcc"] = float(_nanmean(pcc))
            row["pcc_n_genes"] = int(np.isfinite(pcc).sum())
        elif m == "mse":
            row["mse"] = float((err**2).mean())
        elif m == "mae":
            row["mae"] = float(np.abs(err).mean())
        elif m == "ssim":
            row["ssim"] = float(_nanmean(per_gene["ssim"]))
    row["n_constant"] = int(t_const.sum())
    row["n_constant_pred"] = int((p_const & ~t_const).sum())

    if _has_uncertainty(p):
        _uncertainty_metrics(p, idx, truth, mean, levels, row, per_gene)
    if row["n_constant_pred"]:
        logg.warning(
            f"evaluate: {row['n_constant_pred']} gene(s) vary in the truth but are constant in the prediction "
            f"in {label!r}; their PCC is undefined and they are left out of PCC-k."
        )
    return row, pd.DataFrame(per_gene)


def _evaluate_tables(
    data, *, pred_key, truth_layer, by, metrics, rank_by, section_key, genes=None, table_key=None, levels=DEFAULT_LEVELS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    names, _ = _parse_metrics(metrics)
    levels = check_levels(levels, "levels")
    _check_choice("rank_by", rank_by, _RANK_BY)
    p = _load_prediction(data, pred_key, genes=genes, truth_layer=truth_layer, table_key=table_key)
    obs = p.obs
    if by is not None and by != section_key and by not in obs:
        raise KeyError(f"`by` {by!r} is not an obs column; columns: {list(obs.columns)}.")
    sections = _labels(obs, section_key)
    groups = sections if by == section_key else _labels(obs, by)
    index_name = by if by is not None else section_key
    rows, per_gene, labels = [], [], _ordered_unique(groups, obs, by)
    for label in labels:
        idx = np.flatnonzero(groups == label)
        row, genes_df = _group_metrics(p, idx, sections, names, rank_by, label, levels)
        rows.append(row)
        genes_df.insert(0, index_name, label)
        per_gene.append(genes_df)
    summary = pd.DataFrame.from_records(rows, index=pd.Index(labels, name=index_name))
    per_gene_df = pd.concat(per_gene, ignore_index=True)
    for m in names:  # PCC-k is named for k genes: where fewer have a PCC it is NaN, and says why
        match = _PCC_K.match(m)
        short = summary.index[summary[f"{m}_n_genes"] < int(match.group(1))] if match else []
        if len(short):
            n = summary.loc[short, f"{m}_n_genes"].astype(int)
            where = ", ".join(f"{label!r} ({count} genes)" for label, count in list(n.items())[:5])
            logg.info(
                f"evaluate: {m!r} is NaN where fewer than {match.group(1)} genes have a PCC: {where}"
                f"{', ...' if len(n) > 5 else ''}; 'pcc' is the mean PCC over all genes that have one."
            )
    attrs = {
        "pred_key": pred_key,
        "truth_layer": p.layer,
        "rank_by": rank_by,
        "levels": list(levels),
        "transform": str(p.source.uns.get(K.UNS_NORMALIZE, {}).get("transform", ""))
        if isinstance(p.source.uns.get(K.UNS_NORMALIZE), dict)
        else "",
    }
    summary.attrs.update(attrs)
    per_gene_df.attrs.update(attrs)
    return summary, per_gene_df


@_doc
def evaluate(
    data: AnnData | SpatialData,
    *,
    pred_key: str = K.PRED_KEY,
    truth_layer: str | None = None,
    genes: Sequence[str] | None = None,
    by: str | None = K.SECTION_KEY,
    metrics: Sequence[str] = ("pcc50", "pcc200", "pcc", "mse", "mae", "ssim"),
    rank_by: Literal["variance", "pcc"] = "variance",
    per_gene: bool = False,
    levels: Sequence[float] = DEFAULT_LEVELS,
    section_key: str = K.SECTION_KEY,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Score a prediction against the measured expression, per section (the paper's Table 1 metrics and more).

    All metrics are computed on the log-normalised expression the model was trained on (the prediction's
    training layer, else the layer written by :func:`sthinge.pp.normalize`), over the spots that were predicted.

    - **PCC** of each gene across the spots of a section. A gene that is constant in the truth (zero variance)
      has no PCC: it is left out of every PCC summary and counted in ``n_constant``; a gene that varies in the
      truth but is constant in the prediction is left out likewise and counted in ``n_constant_pred``.
    - **PCC-k** (``"pcc50"``, ``"pcc200"``, any ``"pcc<k>"``) is the mean PCC over k genes chosen by ``rank_by``:
      ``"variance"`` takes the k genes with the largest variance **of the truth** in that section (the paper's
      wording, "the k most variable genes"; it does not look at the prediction, so it is the default), ``"pcc"``
      takes the k **largest PCCs** (what Stem's evaluation code does, which the paper's Table 1 follows; it selects
      on the result and therefore reads higher). Reports comparing with the paper should give both. PCC-k is
      reported only where k genes have a PCC: with fewer (e.g. PCC-200 of a 116-gene panel) it is NaN, a note is
      logged, and ``pcc<k>_n_genes`` says how many genes there are. ``"pcc"`` is the mean over all genes with a PCC
      (``pcc_n_genes`` of them).
    - **MSE** and **MAE** over spots x genes (all genes, constant ones included).
    - **SSIM** per gene: truth and prediction are min-max scaled jointly per gene, rasterised on the spot lattice
      (``obs["array_x"/"array_y"]``, else a grid inferred from ``obsm["spatial"]``; hexagonal arrays are folded onto
      a dense grid; cells without a spot are 0) and compared with :func:`skimage.metrics.structural_similarity`
      (uniform window of 7, or the largest odd size that fits; NaN for lattices narrower than 3); the SSIM map is
      averaged over the cells holding a spot, then over genes. A perfect prediction gives 1. With ``by`` other than
      the section, SSIM is computed per section and averaged.
    - **Uncertainty**, whenever the prediction has a standard deviation (HINGE's std over samples, the baselines'
      Gaussian std), samples or quantile layers; these columns are added to any ``metrics``:

      - ``coverage<L>`` for each nominal level in ``levels`` (``coverage50``, ``coverage80``, ``coverage90``,
        ``coverage95`` by default; the level in percent, e.g. ``coverage97.5``): the fraction of true values inside
        the central interval at that level, bounds included. A calibrated prediction covers about the nominal level;
        less means the intervals are too narrow (overconfident).
      - ``width<L>``: the mean width (upper - lower bound) of those intervals, in the units of the expression.
        Compare coverage only together with width: wide intervals cover easily.
      - The interval at level L is, per level, the first of: the quantile layers written with the prediction,
        ``layers[f"{pred_key}_q05"]`` / ``layers[f"{pred_key}_q95"]`` for 90 % (q25/q75 for 50 %, q10/q90 for 80 %,
        q025/q975 for 95 %: the digits of the quantile after "0."; ``obsm`` DataFrames for an AnnData); else the
        split-conformal interval of the calibration stored with the prediction (``uns[pred_key]["calibration"]``,
        written by ``tl.predict`` / ``tl.predict_baseline`` for a calibrated model) from its mean and std; else the
        (1 - L) / 2 and (1 + L) / 2 quantiles of the samples ``obsm[f"{pred_key}_samples"]`` (needs
        ``return_samples=True`` in ``tl.predict``); else the Gaussian interval mean +- z std with z the standard
        normal (1 + L) / 2 quantile (0.674, 1.282, 1.645, 1.960). ``interval_method`` says which (``"layers"``,
        ``"conformal"``, ``"samples"``, ``"gaussian"``; where levels differ, e.g.
        ``"layers(50,90)+conformal(80,95)"``).
      - ``crps``: the continuous ranked probability score, mean over spots x genes, in the units of the expression
        (lower is better; a proper scoring rule: it rewards sharp *and* calibrated predictions, and equals the
        absolute error for a prediction without spread). From the samples when there are samples, in the energy
        form ``E|X - y| - E|X - X'| / 2`` without the pairs of a sample with itself (an unbiased estimate of the
        sampled distribution's CRPS, so that few samples are not penalised); else the closed form of the Gaussian
        N(mean, std^2). ``crps_method`` says which (``"samples"``, ``"gaussian"``, ``"none"`` with quantile layers
        alone, then ``crps`` is NaN).
      - ``unc_spearman``: the Spearman correlation, per gene, between the predicted std (of the samples if no std
        was written) and the absolute error, averaged over genes; higher means the uncertainty points at the errors.
      - ``coverage90_method``: the ``interval_method`` of the 90 % level, kept from earlier versions.

    Parameters
    ----------
    data
        SpatialData (prediction table ``tables[pred_key]``) or AnnData (``obsm[pred_key]``) as written by
        :func:`sthinge.tl.predict` or :func:`sthinge.tl.predict_baseline`.
    %(pred_key)s
    %(truth_layer)s
    genes
        Evaluate only these genes of the panel (default all).
    by
        obs column to group spots by (default the section); ``None`` pools all predicted spots into one row ``"all"``.
    metrics
        Metric names: ``"pcc<k>"``, ``"pcc"``, ``"mse"``, ``"mae"``, ``"ssim"``.
    rank_by
        Gene selection of PCC-k: ``"variance"`` (of the truth) or ``"pcc"`` (largest correlations).
    per_gene
        Return the per-gene table instead of the per-section summary.
    levels
        Nominal levels (in (0, 1)) of the central intervals whose coverage and width are reported.
    %(section_key)s
        A table without the column is one section, ``"all"``.
    %(source_table_key)s

    Returns
    -------
    With ``per_gene=False``, a DataFrame with one row per group (index = section): ``n_spots``, ``n_genes``, the
    requested metrics (each ``pcc<k>`` followed by ``pcc<k>_n_genes``), ``n_constant``, ``n_constant_pred`` and,
    with an uncertainty, ``unc_spearman``, ``crps``, ``coverage<L>`` and ``width<L>`` per level,
    ``interval_method``, ``crps_method`` and ``coverage90_method`` (when 0.9 is among ``levels``). With
    ``per_gene=True``, one row per (section, gene): ``section``, ``gene``, ``pcc``, ``mse``, ``mae``,
    ``truth_var``, ``ssim`` (if requested) and, with an uncertainty, ``unc_spearman``, ``crps``, ``coverage<L>``,
    ``width<L>`` (each over the spots of that gene). ``attrs`` records ``pred_key``, ``truth_layer``, ``rank_by``,
    ``levels`` and ``transform``. Average the rows for the paper's per-dataset numbers
    (``df.mean(numeric_only=True)``); :func:`sthinge.pl.calibration` draws coverage against the nominal level.

    Examples
    --------
    >>> st.tl.predict(sdata, model, sections=["S3"], n_samples=8, return_samples=True)  # doctest: +SKIP
    >>> st.tl.evaluate(sdata)  # doctest: +SKIP
    >>> st.tl.evaluate(sdata, rank_by="pcc", metrics=["pcc50"])  # Stem's convention  # doctest: +SKIP
    >>> genes = st.tl.evaluate(sdata, per_gene=True).sort_values("pcc")  # doctest: +SKIP
    >>> st.tl.evaluate(sdata, levels=[0.5, 0.9])[["coverage50", "coverage90", "crps"]]  # doctest: +SKIP
    """
    summary, genes_df = _evaluate_tables(
        data,
        pred_key=pred_key,
        truth_layer=truth_layer,
        genes=genes,
        by=by,
        metrics=metrics,
        rank_by=rank_by,
        section_key=section_key,
        table_key=table_key,
        levels=levels,
    )
    return genes_df if per_gene else summary


# ----------------------------------------------------------------------------------------------------------
# co-expression
# ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Coexpression:
    """Gene-gene correlation matrices of the truth and the prediction, and how similar they are.

    Attributes
    ----------
    truth, pred
        Gene x gene correlation matrices (DataFrames) over the spots.
    similarity
        Pearson correlation between the upper triangles (off-diagonal) of the two matrices.
    rmse
        Root mean squared difference over the upper triangles.
    frobenius
        Frobenius norm of the difference of the full matrices.
    method
        ``"pearson"`` or ``"spearman"``.
    section
        The section used (``None``: all predicted spots).
    n_spots
        Number of spots.
    dropped
        Genes left out because they are constant in the truth or the prediction.
    """

    truth: pd.DataFrame
    pred: pd.DataFrame
    similarity: float
    rmse: float
    frobenius: float
    method: str
    section: str | None
    n_spots: int
    dropped: list[str]

    @property
    def genes(self) -> list[str]:
        """The genes of the matrices."""
        return list(self.truth.index)


def _corr_matrix(x: np.ndarray, method: str) -> np.ndarray:
    from scipy.stats import rankdata

    if method == "spearman":
        x = rankdata(x, axis=0)
    c = np.corrcoef(x, rowvar=False)
    return np.clip(np.atleast_2d(c), -1.0, 1.0)


@_doc
def coexpression(
    data: AnnData | SpatialData,
    *,
    pred_key: str = K.PRED_KEY,
    genes: Sequence[str] | None = None,
    section: str | None = None,
    method: Literal["pearson", "spearman"] = "pearson",
    truth_layer: str | None = None,
    section_key: str = K.SECTION_KEY,
    table_key: str | None = None,
) -> Coexpression:
    """Compare the gene-gene co-expression structure of the prediction with the truth (the paper's Fig. 4 / S6).

    Parameters
    ----------
    data
        SpatialData or AnnData holding a prediction (see :func:`evaluate`).
    %(pred_key)s
    genes
        Genes of the panel to include (default all; at least two).
    section
        Use only the spots of this section (default: all predicted spots, pooled).
    method
        ``"pearson"`` or ``"spearman"`` correlation across spots.
    %(truth_layer)s
    %(section_key)s
    %(source_table_key)s

    Returns
    -------
    A :class:`Coexpression` with both matrices and the similarity scores (``similarity``: Pearson correlation of
    the upper triangles; ``rmse``; ``frobenius``).

    Examples
    --------
    >>> co = st.tl.coexpression(sdata, section="S3")  # doctest: +SKIP
    >>> co.similarity, co.truth.shape  # doctest: +SKIP
    """
    _check_choice("method", method, ("pearson", "spearman"))
    p = _load_prediction(data, pred_key, genes=genes, truth_layer=truth_layer, table_key=table_key)
    if len(p.genes) < 2:
        raise ValueError(f"`genes` must name at least two genes for a co-expression matrix; got {p.genes}.")
    idx = np.arange(len(p.rows))
    if section is not None:
        labels = _labels(p.obs, section_key)
        if section_key not in p.obs:
            raise KeyError(f"`section` needs the obs column {section_key!r}; set `section_key`.")
        idx = np.flatnonzero(labels == str(section))
        if idx.size == 0:
            raise ValueError(
                f"`section` {section!r} has no predicted spots; predicted sections: {sorted(set(labels))}."
            )
    truth, mean = p.truth[idx], p.mean[idx]
    bad = _constant(truth) | _constant(mean)
    dropped = [g for g, b in zip(p.genes, bad) if b]
    keep = np.flatnonzero(~bad)
    if keep.size < 2:
        raise ValueError(
            f"Co-expression needs at least two genes that vary across the {idx.size} spot(s) in truth and "
            f"prediction; got {keep.size} of the {len(p.genes)} `genes`."
        )
    if dropped:
        logg.warning(f"coexpression: {len(dropped)} constant gene(s) left out: {dropped[:10]}.")
    kept = [p.genes[i] for i in keep]
    ct, cp = _corr_matrix(truth[:, keep], method), _corr_matrix(mean[:, keep], method)
    iu = np.triu_indices(len(keep), k=1)
    a, b = ct[iu], cp[iu]
    similarity = float(np.corrcoef(a, b)[0, 1]) if a.size >= 2 and np.ptp(a) > 0 and np.ptp(b) > 0 else float("nan")
    return Coexpression(
        truth=pd.DataFrame(ct, index=kept, columns=kept),
        pred=pd.DataFrame(cp, index=kept, columns=kept),
        similarity=similarity,
        rmse=float(np.sqrt(np.mean((a - b) ** 2))),
        frobenius=float(np.linalg.norm(ct - cp)),
        method=method,
        section=None if section is None else str(section),
        n_spots=int(idx.size),
        dropped=dropped,
    )


# ----------------------------------------------------------------------------------------------------------
# paired comparison
# ----------------------------------------------------------------------------------------------------------
def _keyed(table: pd.DataFrame, by: list[str] | None, metric: str, arg: str) -> pd.Series:
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"`{arg}` must be a DataFrame from `tl.evaluate` / `tl.cross_validate`.")
    if metric not in table.columns:
        raise KeyError(f"`metric` {metric!r} is not a column of `{arg}`; columns: {list(table.columns)}.")
    if by is None:
        values = table[metric]
    else:
        missing = [b for b in by if b not in table.columns and b != table.index.name]
        if missing:
            raise KeyError(f"`by` {missing} not found in `{arg}` (columns: {list(table.columns)}).")
        frame = table.reset_index() if any(b == table.index.name and b not in table.columns for b in by) else table
        values = frame.set_index(by)[metric]
    if not values.index.is_unique:
        dup = list(values.index[values.index.duplicated()][:3])
        raise ValueError(f"`{arg}` has duplicated keys {dup}; pass `by=` naming the columns that identify a row.")
    return pd.to_numeric(values, errors="coerce")


def compare(
    results_a: pd.DataFrame,
    results_b: pd.DataFrame,
    *,
    metric: str,
    by: str | Sequence[str] | None = None,
    alternative: Literal["two-sided", "greater", "less"] = "two-sided",
) -> pd.Series:
    """Paired Wilcoxon signed-rank test of a metric between two results on the same sections (or genes).

    Rows are matched on their keys: the index (sections) by default, or ``("section", "gene")`` for per-gene
    tables of :func:`evaluate`, or the columns named by ``by``. Pairs where either value is NaN are dropped.

    Parameters
    ----------
    results_a, results_b
        Tables from :func:`evaluate` or :func:`cross_validate` (e.g. two methods on the same folds).
    metric
        Column to compare, e.g. ``"pcc50"``.
    by
        Column(s) identifying matching rows (default: the index; for per-gene tables ``["section", "gene"]``).
    alternative
        ``"two-sided"``, ``"greater"`` (a > b) or ``"less"``; passed to :func:`scipy.stats.wilcoxon`.

    Returns
    -------
    A Series with ``metric``, ``n`` (pairs), ``n_dropped`` (pairs with NaN), ``median_diff`` and ``mean_diff``
    (a - b), ``statistic`` and ``pvalue`` of the test, and ``alternative``.

    Examples
    --------
    >>> hinge = st.tl.cross_validate(sdata, method="hinge", embedding_key="X_uni")  # doctest: +SKIP
    >>> ridge = st.tl.cross_validate(sdata, method="ridge", embedding_key="X_uni")  # doctest: +SKIP
    >>> st.tl.compare(hinge, ridge, metric="pcc50", alternative="greater")  # doctest: +SKIP
    """
    from scipy.stats import wilcoxon

    _check_choice("alternative", alternative, ("two-sided", "greater", "less"))
    if not isinstance(metric, str):
        raise TypeError(f"`metric` must be a column name, got {type(metric).__name__}.")
    if by is None:
        cols = set(getattr(results_a, "columns", [])) & set(getattr(results_b, "columns", []))
        keys = [K.SECTION_KEY, "gene"] if {K.SECTION_KEY, "gene"} <= cols else None
    else:
        keys = _as_str_list("by", by)
    a = _keyed(results_a, keys, metric, "results_a")
    b = _keyed(results_b, keys, metric, "results_b")
    common = a.index.intersection(b.index)
    if len(common) == 0:
        raise ValueError(
            f"`results_a` and `results_b` share no rows (keys {list(a.index[:3])} vs {list(b.index[:3])}); they must "
            "be results on the same sections / genes."
        )
    if len(common) < max(len(a), len(b)):
        logg.warning(f"compare: {max(len(a), len(b)) - len(common)} row(s) without a partner are ignored.")
    x, y = a.loc[common].to_numpy(float), b.loc[common].to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    d = x[ok] - y[ok]
    statistic, pvalue = float("nan"), float("nan")
    if d.size and np.any(d != 0):
        res = wilcoxon(x[ok], y[ok], alternative=alternative)
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    elif d.size:
        pvalue = 1.0  # identical results
    return pd.Series(
        {
            "metric": metric,
            "n": int(ok.sum()),
            "n_dropped": int((~ok).sum()),
            "median_diff": float(np.median(d)) if d.size else float("nan"),
            "mean_diff": float(np.mean(d)) if d.size else float("nan"),
            "statistic": statistic,
            "pvalue": pvalue,
            "alternative": alternative,
        },
        name=metric,
    )
