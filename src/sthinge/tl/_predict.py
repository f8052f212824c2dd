"""``tl.predict``: sample expression for every spot and write it as a table linked to the same shapes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg, progress
from sthinge._utils import (
    _atomic_path,
    _check_int,
    _check_output_path,
    _check_overwrite,
    _is_spatialdata,
    _removed_keywords,
    _resolve_table,
)
from sthinge.tl._intervals import check_levels
from sthinge.tl._store import create_table_store, finish_table_store, read_table_store

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.tl._model import HingeModel

_CHUNK = 4096  # spots per sampler call; fixed so that results do not depend on `batch_size`


def _as_model(model):
    from sthinge.tl._model import HingeModel

    if isinstance(model, HingeModel):
        return model
    if isinstance(model, str | os.PathLike):
        if not os.path.exists(model):
            raise FileNotFoundError(
                f"`model` {os.fspath(model)!r} does not exist (expected the folder written by `HingeModel.save`)."
            )
        return HingeModel.load(model)
    raise TypeError(f"`model` must be a HingeModel or the folder of a saved model, got {type(model).__name__}.")


@_removed_keywords(copy="pass `inplace=False` to get the prediction table without writing it into `data`")
@_doc
def predict(
    data: AnnData | SpatialData,
    model: HingeModel | str | os.PathLike,
    *,
    n_steps: int | None = None,
    n_samples: int = 1,
    batch_size: int | None = None,
    sections: Sequence[str] | str | None = None,
    section_key: str = K.SECTION_KEY,
    seed: int = 0,
    device: str | None = None,
    autocast: bool | None = None,
    compile: bool = False,  # noqa: A002 - the name torch users know
    return_samples: bool = False,
    levels: Sequence[float] | None = (0.5, 0.9),
    key_added: str = K.PRED_KEY,
    overwrite: bool = False,
    inplace: bool = True,
    table_key: str | None = None,
    store: str | os.PathLike | None = None,
) -> AnnData | None:
    """Sample gene expression for every spot from its histology embedding, with its uncertainty.

    Spots are processed in streamed chunks and the results written into preallocated arrays, so memory beyond
    the outputs does not grow with the number of spots. With ``store``, those arrays are on disk: nothing of the
    size of the prediction is held in memory, for slides of millions of spots.

    Parameters
    ----------
    data
        SpatialData or AnnData holding the model's embedding in ``obsm`` (tables made by ``pp.make_grid``
        without expression work too).
    model
        A :class:`sthinge.tl.HingeModel` or the folder it was saved to.
    n_steps
        Step budget K of the sampler (1 <= K <= T; default T, the full ancestral sampler).
    n_samples
        Samples per spot; their mean is the prediction and their standard deviation the uncertainty.
    batch_size
        Rows (spots x samples) per model call; the result does not depend on it. Default: 256 on a GPU; on a CPU
        from 16 to 256 by the model's width and panel size (:func:`sthinge.models.auto_batch_size`), as large
        batches of small models run slower on a CPU. On a GPU out-of-memory error it is halved (with a warning)
        until the calls fit, and stays so for the rest of the run.
    sections
        Only predict these sections (values of ``obs[section_key]``); default all spots.
    %(section_key)s
    seed
        Random seed; the same seed gives the same prediction.
    %(device)s
        ``None``: :attr:`sthinge.settings.device`.
    autocast
        bfloat16 autocast in sampling (default: on for CUDA, off on CPU).
    compile
        Run the model through :func:`torch.compile` (fused kernels; worth it for large jobs, above all on a GPU:
        compiling takes from seconds to minutes, once per call of ``predict``). If compiling or the compiled
        model fails, a warning says so and the prediction continues uncompiled (as with ``compile=False``).
    return_samples
        Also store the individual samples.
    levels
        Nominal levels of the central prediction intervals to write (each in (0, 1); ``None``: none). With a
        calibrated model (:attr:`sthinge.tl.HingeModel.calibration`, set by :func:`sthinge.tl.fit` or
        :func:`sthinge.tl.calibrate`) they are the split-conformal intervals ``mean +- q_g(level) (std +
        delta_g)`` of each gene g, which cover their level on spots like the calibration spots; an uncalibrated
        model gives Gaussian intervals ``mean +- z std`` with a warning, as they usually cover far less. Lower
        bounds are clipped at 0.
    key_added
        Name of the prediction. It may never name the table being read, ``obsm["spatial"]`` or the model's
        input embedding.
    overwrite
        Replace an existing prediction of the same name (``tables[key_added]``, or ``obsm[key_added]`` /
        ``obsm[f"{key_added}_std"]`` for AnnData). Without it, an existing one is an error raised before any work.
    %(inplace_prediction)s
    %(table_key)s
    store
        A ``.zarr`` folder to write the prediction table to as it is computed, chunk by chunk (anndata's zarr
        format: ``anndata.read_zarr(store)`` reads it). The table written into ``data`` (or returned) then holds
        its mean, std, interval and sample arrays as dask arrays reading from ``store``; keep the folder while
        you use them. An existing non-empty folder is refused unless ``overwrite=True``; the folder appears only
        once complete. For AnnData ``data`` it needs ``inplace=False`` (``obsm`` frames are held in memory).

    %(returns_prediction)s
    The prediction table is an AnnData with the model's gene panel as ``var``, the source rows' ``obs`` and
    ``obsm["spatial"]``, and

    - ``X``: the predicted mean (log-normalised: the transform of the training layer, ``uns[key_added]``): the mean
      over the samples, where for ``likelihood="gaussian"`` models each sample contributes the mean of the
      distribution its values were drawn from (not the draw itself, which only adds noise to the mean);
    - ``layers[f"{key_added}_std"]``: the predictive standard deviation of the spot and gene, before
      calibration: the square root of the variance of the mixture of the distributions the samples were drawn
      from (reveal order, fill noise and, for ``likelihood="gaussian"`` models, the decoder's Gaussian of each
      draw; law of total variance). For a point model (``likelihood="point"``, the paper's) it is the standard
      deviation over the samples, 0 for one sample;
    - ``layers[f"{key_added}_q05"]``, ``layers[f"{key_added}_q95"]``, ...: the bounds of the intervals at
      ``levels`` (0.5: ``q25`` / ``q75``; 0.9: ``q05`` / ``q95``; 0.95: ``q025`` / ``q975``);
    - ``obsm[f"{key_added}_samples"]``: spots x samples x genes, if ``return_samples``;
    - ``uns[key_added]``: the settings of the run, and how the intervals were made (``"intervals"``:
      ``"conformal"`` or ``"gaussian"``, ``"levels"``).

    For SpatialData input it is written as ``tables[key_added]``, annotating the same shapes as the source table
    (so ``squidpy.gr.spatial_neighbors`` / ``spatial_autocorr`` run on it directly; it holds no image, so draw it
    with ``squidpy.pl.spatial_scatter(pred, color=gene, shape=None)``, or over the H&E with
    :func:`sthinge.pl.spatial`). For AnnData input the mean, standard deviation
    and interval bounds are written to ``obsm[key_added]``, ``obsm[f"{key_added}_std"]`` and
    ``obsm[f"{key_added}_q05"]``, ... as DataFrames (spots x panel genes), and the samples as an array
    ``obsm[f"{key_added}_samples"]`` (spots x samples x genes); rows not predicted hold NaN.

    Examples
    --------
    >>> st.tl.predict(sdata, model, n_steps=5, n_samples=4)  # doctest: +SKIP
    >>> sdata.tables["sthinge"].layers["sthinge_std"]  # doctest: +SKIP
    >>> pred = st.tl.predict(sdata, model, key_added="try", inplace=False)  # nothing written  # doctest: +SKIP
    """
    from sthinge._settings import settings

    # ---- validation before any work -----------------------------------------------------------------------
    dev = settings.resolve_device(device)  # an unavailable device fails before the model is loaded
    model = _as_model(model)
    table, source_key = _resolve_table(data, table_key)
    T = int(model.config.n_steps)
    if n_steps is not None:
        n_steps = _check_int("n_steps", n_steps, low=1, high=T)
    n_samples = _check_int("n_samples", n_samples, low=1, high=100_000)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, low=1)
    seed = _check_int("seed", seed, low=0)
    if not isinstance(compile, bool):
        raise TypeError(f"`compile` must be True or False, got {compile!r}.")
    where = dict(sections=sections, section_key=section_key, overwrite=overwrite, levels=levels)
    inplace, levels, rows, emb = _prediction_inputs(data, table, source_key, model, key_added, inplace=inplace, **where)
    if len(rows) == 0:
        raise ValueError("`data` has no spots to predict.")
    if store is not None:
        store = _check_output_path("store", store, overwrite=overwrite, kind="folder")
        if inplace and not _is_spatialdata(data):
            raise ValueError("`store` with AnnData `data` needs `inplace=False`: `obsm` frames are held in memory.")
    if levels:  # the calibration only matters for the intervals
        _warn_calibration_mismatch(model.calibration, n_samples, n_steps or T)
    if autocast is None:
        autocast = dev.type == "cuda"

    # ---- outputs: in memory, or zarr arrays in `store` ------------------------------------------------------------
    n, G = len(rows), model.n_genes
    uns: dict[str, Any] = {}
    bound_names = _interval_setup(levels, model.calibration, key_added, uns)
    std_key, samples_key = f"{key_added}{K.STD_SUFFIX}", f"{key_added}{K.SAMPLES_SUFFIX}"
    shapes = {"X": (n, G), f"layers/{std_key}": (n, G), **{f"layers/{b}": (n, G) for b in bound_names}}
    if return_samples:
        shapes[f"obsm/{samples_key}"] = (n, n_samples, G)
    with contextlib.ExitStack() as stack:
        if store is None:
            out_arrays = {name: np.empty(shape, np.float32) for name, shape in shapes.items()}
        else:
            target = stack.enter_context(_atomic_path(store))
            skeleton_obsm = (
                {K.SPATIAL_KEY: np.asarray(table.obsm[K.SPATIAL_KEY])[rows]} if K.SPATIAL_KEY in table.obsm else {}
            )
            out_arrays = create_table_store(
                target,
                obs=table.obs.iloc[rows].copy(),
                var=pd.DataFrame(index=pd.Index(list(model.genes))),
                obsm=skeleton_obsm,
                arrays=shapes,
                rows=_CHUNK,
            )
        keys = (key_added, std_key, samples_key)
        sampling = dict(n_steps=n_steps, n_samples=n_samples, batch_size=batch_size, seed=seed, autocast=autocast)
        sampling.update(compile=compile, return_samples=return_samples, levels=levels)
        elapsed, compiled = _sample_into(out_arrays, model, emb, rows, dev, keys, **sampling)
        uns.update(
            {
                "n_steps": int(n_steps or T),
                "n_samples": int(n_samples),
                "seed": int(seed),
                "embedding_key": model.embedding_key,
                "variant": model.config.variant,
                "transform": str(model.transform.get("transform", "")),
                "training_layer": str(model.layer or ""),
                "source_table": source_key if source_key is not None else "",
                "seconds": float(elapsed),
                "compiled": bool(compiled),
            }
        )
        if store is not None:
            finish_table_store(target, {key_added: uns})
    logg.info(f"predict: {n} spots x {G} genes, {n_samples} sample(s), {n_steps or T} steps in {elapsed:.1f} s")
    if store is not None:
        logg.info(f"predict: the prediction is in {str(store)!r}; its arrays are read from there.")
        stored = read_table_store(store)
        out_arrays = {"X": stored.X, **{f"layers/{k}": v for k, v in stored.layers.items()}}
        out_arrays.update({f"obsm/{k}": v for k, v in stored.obsm.items() if k != K.SPATIAL_KEY})
    mean, std = out_arrays["X"], out_arrays[f"layers/{std_key}"]
    bounds = {b: out_arrays[f"layers/{b}"] for b in bound_names}
    extra = {samples_key: out_arrays[f"obsm/{samples_key}"]} if return_samples else None
    return _write_prediction(
        data, table, rows, mean, std, model.genes, key_added, uns, not inplace, extra_obsm=extra, extra_layers=bounds
    )


def _sample_into(
    out, model, emb, rows, dev, keys, *, levels, n_steps, n_samples, batch_size, seed, autocast, compile, return_samples
):
    """Sample chunk by chunk into the output arrays ``out`` (numpy or zarr); returns (seconds, compiled)."""
    import torch

    from sthinge.models import auto_batch_size, sample

    key_added, std_key, samples_key = keys
    n = len(rows)
    dtype = torch.bfloat16 if autocast else None
    module = model.module.to(dev).eval()
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if batch_size is None:
        batch_size = auto_batch_size(module, dev)
    runner = _compiled(module) if compile else module
    start = time.perf_counter()
    try:
        for lo in progress(range(0, n, _CHUNK), desc="predicting", total=(n + _CHUNK - 1) // _CHUNK):
            hi = min(lo + _CHUNK, n)
            cond = torch.from_numpy(model.standardize(_rows_of(emb, rows[lo:hi])))  # one chunk at a time
            kwargs = dict(
                n_steps=n_steps,
                n_samples=n_samples,
                generator=gen,
                return_samples=return_samples,
                autocast=dtype,
                return_variance=True,
            )
            state = gen.get_state()
            try:  # a batch size halved on OOM stays halved
                res, batch_size = _sample_with_oom_retry(sample, runner, cond, batch_size=batch_size, **kwargs)
            except torch.cuda.OutOfMemoryError:
                raise
            except Exception as err:  # noqa: BLE001 - any failure of the compiled model: fall back to eager
                if runner is module:
                    raise
                logg.warning(
                    f"predict: the compiled model failed ({type(err).__name__}: {err}); continuing "
                    "without torch.compile."
                )
                runner = module
                gen.set_state(state)
                res, batch_size = _sample_with_oom_retry(sample, runner, cond, batch_size=batch_size, **kwargs)
            # the mixture's mean and variance: for a drawing (Gaussian) model the draws' own noise is integrated
            # out in closed form; for a point model they equal the mean and variance over the samples
            mean = res[-1].float().cpu().numpy()
            std = res[-2].float().clamp_min(0).sqrt().cpu().numpy()
            out["X"][lo:hi] = mean
            out[f"layers/{std_key}"][lo:hi] = std
            for name, values in _interval_bounds(mean, std, levels, model.calibration, key_added).items():
                out[f"layers/{name}"][lo:hi] = values
            if return_samples:
                out[f"obsm/{samples_key}"][lo:hi] = res[2].float().cpu().numpy()
    finally:
        module.cpu()
    return time.perf_counter() - start, bool(compile and runner is not module)


def _warn_calibration_mismatch(calibration, n_samples: int, n_steps: int) -> None:
    """Warn when the calibration was made with other sampling settings: its multipliers rescale the spread that
    *its* ``n_samples`` / ``n_steps`` gave (fewer samples give a smaller mixture spread), so intervals may be off."""
    if calibration is None:
        return
    made = {k: calibration.info.get(k) for k in ("n_samples", "n_steps")}
    now = {"n_samples": n_samples, "n_steps": n_steps}
    differ = [f"{k}={now[k]} (calibrated with {made[k]})" for k in now if made[k] is not None and made[k] != now[k]]
    if differ:
        logg.warning(
            f"predict: {', '.join(differ)}: the intervals are calibrated for other sampling settings and may not "
            "hold their level; predict with the calibration's settings, or recalibrate with `tl.calibrate`."
        )


def _intervals(
    mean: np.ndarray, std: np.ndarray, levels: tuple[float, ...], calibration, key_added: str, uns: dict[str, Any]
) -> dict[str, np.ndarray]:
    """The interval bounds at ``levels`` by their layer names: conformal with a calibration, else Gaussian (with a
    warning). ``uns`` records which."""
    _interval_setup(levels, calibration, key_added, uns)
    return _interval_bounds(mean, std, levels, calibration, key_added)


def _interval_setup(levels: tuple[float, ...], calibration, key_added: str, uns: dict[str, Any]) -> list[str]:
    """Record in ``uns`` how the intervals are made (warning once when they are Gaussian); their layer names."""
    from sthinge.tl._intervals import interval_layer_names

    if calibration is not None:  # so that `tl.evaluate` gives calibrated intervals at any level
        uns["calibration"] = calibration.to_dict()
    if not levels:
        return []
    uns["levels"] = [float(v) for v in levels]
    uns["intervals"] = "gaussian" if calibration is None else "conformal"
    if calibration is None:
        logg.warning(
            "predict: the model is not calibrated, so the intervals are Gaussian (mean +- z std) and "
            "usually cover far less than their level; calibrate it with `tl.calibrate` (or fit with "
            "`calibrate=True`)."
        )
    return [name for level in levels for name in interval_layer_names(key_added, level)]


def _interval_bounds(mean, std, levels: tuple[float, ...], calibration, key_added: str) -> dict[str, np.ndarray]:
    """The bounds (by layer name) of the intervals at ``levels`` for these rows of ``mean`` / ``std``."""
    from sthinge.tl._intervals import gaussian_z, interval_layer_names

    out: dict[str, np.ndarray] = {}
    for level in levels or ():
        if calibration is None:
            half = gaussian_z(level) * std
            lo, hi = np.maximum(mean - half, 0.0).astype(np.float32), (mean + half).astype(np.float32)
        else:
            lo, hi = calibration.interval(mean, std, level)
        names = interval_layer_names(key_added, level)
        out[names[0]], out[names[1]] = lo, hi
    return out


def _check_prediction_keys(
    data, table, source_key, key_added: str, embedding_key: str, overwrite, levels: tuple[float, ...] = ()
) -> None:
    """Where a prediction named ``key_added`` would be written into ``data``: the one rule of every writer.

    Never the table being read, the coordinates or the input embedding (not even with ``overwrite``); another
    element of a SpatialData (image, shapes, ...) never; an existing prediction table / obsm key only with
    ``overwrite=True``.
    """
    std_key = f"{key_added}{K.STD_SUFFIX}"
    if _is_spatialdata(data):
        if key_added == source_key:
            raise ValueError(
                f"`key_added` {key_added!r} names the table being read (`table_key`); it is never "
                "replaced. Choose another name."
            )
        for kind in ("images", "labels", "shapes", "points", "tables"):
            for name in getattr(data, kind, {}):
                if name.lower() == key_added.lower() and not (kind == "tables" and name == key_added):
                    raise ValueError(
                        f"`key_added` {key_added!r} names an existing {kind[:-1]} element {name!r} of "
                        "the SpatialData object (element names are unique across images, labels, "
                        "points, shapes and tables, and their case); choose another name."
                    )
        _check_overwrite(f"`key_added` {key_added!r}: table {key_added!r}", key_added in data.tables, overwrite)
        return
    from sthinge.tl._intervals import interval_layer_names

    keys = [key_added, std_key, *(name for level in levels for name in interval_layer_names(key_added, level))]
    protected = {K.SPATIAL_KEY: "the spot coordinates", embedding_key: "the model's input embedding"}
    for key in keys:
        if key in protected:
            raise ValueError(
                f"`key_added` {key_added!r} would write `obsm[{key!r}]`, {protected[key]}; it is never "
                "replaced. Choose another name."
            )
    for key in keys:
        _check_overwrite(f"`key_added` {key_added!r}: `obsm[{key!r}]`", key in table.obsm, overwrite)


def _check_inplace(inplace: Any) -> bool:
    if not isinstance(inplace, bool):
        raise TypeError(f"`inplace` must be True or False, got {inplace!r}.")
    return inplace


def _prediction_inputs(data, table, source_key, model, key_added, *, inplace, sections, section_key, overwrite, levels):
    """Validate the common inputs of ``predict`` and ``predict_baseline`` (``model``: a HingeModel or a
    BaselineModel, with ``embedding_key`` and ``cond_dim``) before any work.

    With ``inplace=False`` the prediction is returned, not written, so where it would be written is not checked.
    Returns ``inplace``, the interval ``levels`` (a tuple, empty for ``None``), the row indices to predict and the
    embedding array *without copying it* (checked chunk by chunk), so memory does not grow with the number of spots.
    """
    inplace = _check_inplace(inplace)
    levels = () if levels is None else check_levels(levels, ascending=True)
    return_table, embedding_key, cond_dim = not inplace, model.embedding_key, model.cond_dim
    from sthinge.tl._data import _embedding_array, _section_rows

    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    rows = _section_rows(table, sections, section_key, "sections")
    emb = _embedding_array(table, embedding_key)
    if emb.shape[1] != cond_dim:
        raise ValueError(
            f"`obsm[{embedding_key!r}]` has {emb.shape[1]} features but the model was trained on "
            f"{cond_dim}; embed with the same encoder as in training."
        )
    for lo in range(0, len(rows), _CHUNK):
        if not np.isfinite(_rows_of(emb, rows[lo : lo + _CHUNK])).all():
            raise ValueError(f"`obsm[{embedding_key!r}]` holds NaN or infinite values.")
    if not return_table:
        _check_prediction_keys(data, table, source_key, key_added, embedding_key, overwrite, levels)
    return inplace, levels, rows, emb


def _is_quantile_key(name: str, key_added: str) -> bool:
    from sthinge.tl._intervals import quantile_from_name

    if not name.startswith(f"{key_added}_q"):
        return False
    try:
        quantile_from_name(name[len(key_added) + 1 :])
    except ValueError:
        return False
    return True


def _rows_of(emb: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(emb[rows], dtype=np.float32)


def _write_prediction(
    data, table, rows, mean, std, genes, key_added, uns, return_table, *, extra_obsm=None, extra_layers=None
):
    """Write (mean, std) for ``rows`` of ``table`` as ``tl.predict`` does (shared with the baselines).

    SpatialData: a new table ``tables[key_added]`` linked to the same shapes; AnnData: ``obsm`` DataFrames.
    With ``return_table`` (``inplace=False``) the prediction table is returned and ``data`` is left untouched.
    The mean is ``X`` only (no ``layers[key_added]`` copy of it, which doubled the table on disk); ``std=None`` (a
    baseline: no uncertainty) writes no standard deviation at all, and an earlier one under the same key is removed.
    """
    import anndata as ad

    std_key = f"{key_added}{K.STD_SUFFIX}"
    obs = table.obs.iloc[rows].copy()
    pred = ad.AnnData(X=mean, obs=obs, var=pd.DataFrame(index=pd.Index(list(genes))))
    if std is not None:
        pred.layers[std_key] = std
    for name, values in (extra_layers or {}).items():
        pred.layers[name] = values
    if K.SPATIAL_KEY in table.obsm:
        pred.obsm[K.SPATIAL_KEY] = np.asarray(table.obsm[K.SPATIAL_KEY])[rows]
    for key, values in (extra_obsm or {}).items():
        pred.obsm[key] = values
    if K.UNS_SECTIONS in table.uns:
        pred.uns[K.UNS_SECTIONS] = table.uns[K.UNS_SECTIONS]
    pred.uns[key_added] = uns

    if _is_spatialdata(data):
        from spatialdata.models import TableModel

        attrs = table.uns.get("spatialdata_attrs", {})
        region_key, instance_key = attrs.get("region_key"), attrs.get("instance_key")
        if region_key is not None and instance_key is not None and region_key in obs and instance_key in obs:
            regions = [str(r) for r in pd.unique(obs[region_key].astype(str))]
            pred.obs[region_key] = pd.Categorical(obs[region_key].astype(str), categories=regions)
            pred = TableModel.parse(pred, region=regions, region_key=region_key, instance_key=instance_key)
        else:
            pred = TableModel.parse(pred)
        if return_table:
            return pred
        data.tables[key_added] = pred
        return None
    if return_table:
        return pred
    data.obsm[key_added] = _full_frame(mean, table, rows, genes)
    if std is not None:
        data.obsm[std_key] = _full_frame(std, table, rows, genes)
    else:  # `overwrite=True` replaced a prediction that had one: do not leave its std beside the new mean
        data.obsm.pop(std_key, None)
    for name in [k for k in data.obsm if _is_quantile_key(k, key_added)]:  # nor its intervals
        del data.obsm[name]
    for name, values in (extra_layers or {}).items():
        data.obsm[name] = _full_frame(values, table, rows, genes)
    data.obsm.pop(f"{key_added}{K.SAMPLES_SUFFIX}", None)  # an earlier prediction's samples
    for name, values in (extra_obsm or {}).items():  # the samples: spots x samples x genes, NaN where not predicted
        full = np.full((table.n_obs, *values.shape[1:]), np.nan, dtype=values.dtype)
        full[rows] = values
        data.obsm[name] = full
    data.uns[key_added] = uns
    return None


def _full_frame(values: np.ndarray, table, rows: np.ndarray, genes: list[str]) -> pd.DataFrame:
    full = np.full((table.n_obs, len(genes)), np.nan, dtype=np.float32)
    full[rows] = values
    return pd.DataFrame(full, index=table.obs_names, columns=list(genes))


def _compiled(module):
    """``torch.compile(module)``, or ``module`` itself (with a warning) where torch cannot compile."""
    import torch

    try:
        return torch.compile(module, dynamic=True)
    except Exception as err:  # noqa: BLE001 - e.g. no compiler for this platform
        logg.warning(f"predict: torch.compile is unavailable ({type(err).__name__}: {err}); sampling uncompiled.")
        return module


def _sample_with_oom_retry(sample_fn, module, cond, *, batch_size: int, **kwargs) -> tuple[Any, int]:
    """Call the sampler; on a GPU out-of-memory error halve the batch and try again (down to 1).

    The generator is rewound before a retry and the sampler draws all its random numbers up front, independently
    of the batch size, so the result is the one the smaller batch size would have given from the start.
    Returns ``(output, batch size that worked)``.
    """
    import torch

    while True:
        state = kwargs["generator"].get_state()
        try:
            return sample_fn(module, cond, batch_size=batch_size, **kwargs), batch_size
        except torch.cuda.OutOfMemoryError:
            if batch_size <= 1:
                raise
            kwargs["generator"].set_state(state)
            batch_size = max(1, batch_size // 2)
            torch.cuda.empty_cache()
            logg.warning(f"GPU out of memory in predict: continuing with batch_size={batch_size}.")
