"""``tl.predict_cohort``: a trained model applied to many H&E-only slides, sharded over processes, resumable.

Each slide goes through :func:`sthinge.io.read_slide`, :func:`sthinge.pp.make_grid`,
:func:`sthinge.pp.embed_histology` (embedded as the model's training embeddings were) and
:func:`sthinge.tl.predict`, and is written as one SpatialData zarr (grid, its table, the prediction). Slides are
dealt to the ranks of ``torch.distributed`` (``torchrun``, SLURM via ``srun torchrun`` or the environment variables
it reads); a single process is a cohort of one rank. Per-slide status files make a rerun skip what is finished and
valid, and retry the rest; a summary table is rewritten as slides finish.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._logging import logg, progress
from sthinge._utils import _atomic_path, _check_float, _check_int, _probe_write, _write_spatialdata

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.tl._model import HingeModel

MANIFEST_COLUMNS = ("path", "mpp", "sample_id")  #: the columns a manifest may have (``path`` is required)
SUMMARY_COLUMNS = ("sample_id", "path", "status", "n_spots", "seconds", "rank", "result", "error")
MARKER = "sthinge_cohort.json"  #: what marks a folder as a cohort's output, and for which model
SUMMARY = "summary.csv"
_STATUS_DIR = ".status"
_IMAGE, _GRID, _GRID_TABLE = "slide", "grid", "grid_table"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_SLIDE_SUFFIXES = (".ome.tiff", ".ome.tif", ".svs", ".tiff", ".tif", ".ndpi", ".mrxs", ".scn", ".bif")


# ---------------------------------------------------------------------------------------------------------------------
# manifest


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in _SLIDE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def read_manifest(manifest: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    """Read and check a cohort manifest: a CSV (or DataFrame) with a ``path`` column and optional ``mpp`` and
    ``sample_id`` columns. Relative paths are taken relative to the CSV's folder.

    Returns a DataFrame with the three columns (``mpp`` NaN where not given, ``sample_id`` the file name without its
    slide suffix where not given). Refused before any work: a missing ``path`` column, other columns, missing
    files, repeated or unusable sample ids (they name the output folders), and pixel sizes that are not positive.
    """
    base = Path(".")
    if isinstance(manifest, str | os.PathLike):
        file = Path(manifest).expanduser()
        if not file.is_file():
            raise FileNotFoundError(f"`manifest` {str(file)!r} is not a file.")
        try:
            df = pd.read_csv(file, dtype={"path": str, "sample_id": str})
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise ValueError(f"`manifest` {str(file)!r} is not a readable CSV: {err}") from None
        base = file.parent
    elif isinstance(manifest, pd.DataFrame):
        df = manifest.copy()
    else:
        raise TypeError(f"`manifest` must be a CSV path or a pandas DataFrame, got {type(manifest).__name__}.")
    df.columns = [str(c).strip() for c in df.columns]
    if "path" not in df.columns:
        raise ValueError(f"The manifest has no 'path' column; its columns: {list(df.columns)}.")
    unknown = [c for c in df.columns if c not in MANIFEST_COLUMNS]
    if unknown:
        raise ValueError(f"The manifest has unknown column(s) {unknown}; allowed: {list(MANIFEST_COLUMNS)}.")
    if len(df) == 0:
        raise ValueError("The manifest lists no slides.")
    if df["path"].isna().any() or (df["path"].astype(str).str.strip() == "").any():
        rows = [int(i) + 2 for i in np.flatnonzero(df["path"].isna() | (df["path"].astype(str).str.strip() == ""))]
        raise ValueError(f"The manifest has rows without a path (CSV lines {rows[:5]}).")
    paths = [
        str(Path(p).expanduser() if Path(p).expanduser().is_absolute() else base / p) for p in df["path"].astype(str)
    ]
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} slide file(s) of the manifest do not exist, e.g. {missing[:5]}.")
    mpp = pd.to_numeric(df["mpp"], errors="coerce") if "mpp" in df else pd.Series(np.nan, index=df.index)
    if "mpp" in df:
        bad = df["mpp"].notna() & (mpp.isna() | ~np.isfinite(mpp) | (mpp <= 0))
        if bad.any():
            raise ValueError(
                f"The manifest's 'mpp' must be empty or a positive number (µm per pixel); bad values: "
                f"{df['mpp'][bad].tolist()[:5]}."
            )
    if "sample_id" in df:
        ids = [str(s).strip() if pd.notna(s) and str(s).strip() else _stem(p) for s, p in zip(df["sample_id"], paths)]
    else:
        ids = [_stem(p) for p in paths]
    bad_ids = [s for s in ids if not _ID.match(s)]
    if bad_ids:
        raise ValueError(
            f"Sample ids name the output folders and may hold only letters, digits, '.', '_' and '-' (not first): "
            f"{bad_ids[:5]}."
        )
    seen, dup = set(), []
    for s in ids:
        (dup.append(s) if s in seen else seen.add(s))
    if dup:
        raise ValueError(f"The manifest repeats sample id(s) {sorted(set(dup))[:5]}; every slide needs its own.")
    return pd.DataFrame({"path": paths, "mpp": mpp.to_numpy(float), "sample_id": ids})


# ---------------------------------------------------------------------------------------------------------------------
# the model's embedding recipe


def _embedding_settings(model: HingeModel, encoder, weights, force_encoder: bool) -> dict[str, Any]:
    """The encoder, weights and tile size to embed new slides with: the model's recorded recipe, checked."""
    from sthinge.tl._model import _sha256

    recipe = model.embedding_recipe
    if recipe is None:
        if encoder is None:
            raise ValueError(
                "The model does not record how its training embeddings were made (they did not come from "
                "`pp.embed_histology`, or the model predates it): pass `encoder=` (and `weights=`) to say how to "
                "embed the slides."
            )
        return {"encoder": encoder, "weights": weights, "tile_size_um": 112.0}
    if encoder is not None and encoder != recipe["encoder"] and not force_encoder:
        raise ValueError(
            f"`encoder` {encoder!r} differs from the encoder the model was trained on ({recipe['encoder']!r}): its "
            "predictions from other features are meaningless. Leave `encoder` out to use the recorded one, or pass "
            "`force_encoder=True` (`--force-encoder`) if you know the features are the same."
        )
    enc = encoder if encoder is not None else recipe["encoder"]
    w = weights if weights is not None else recipe.get("weights")
    recorded = recipe.get("weights_sha256")
    if isinstance(w, str | os.PathLike) and w != "random":
        if not Path(w).is_file():
            raise FileNotFoundError(
                f"The encoder's weights {str(w)!r} (recorded by the model) do not exist here: pass `weights=` with "
                "the file's new location."
            )
        if isinstance(recorded, str) and not force_encoder:
            found = _sha256(w)
            if found != recorded:
                raise ValueError(
                    f"`weights` {str(w)!r} are not the weights the model was trained with (sha256 {found[:12]}…, "
                    f"recorded {recorded[:12]}…). Pass the right file, or `force_encoder=True`."
                )
    return {"encoder": enc, "weights": w, "tile_size_um": float(recipe["tile_size_um"])}


# ---------------------------------------------------------------------------------------------------------------------
# ranks


def _dist() -> tuple[int, int, bool]:
    """(rank, world size, whether this call initialised the process group)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        if not dist.is_available():  # pragma: no cover
            raise RuntimeError("WORLD_SIZE > 1, but this torch has no torch.distributed.")
        import torch

        backend = "nccl" if torch.cuda.is_available() and os.environ.get("STHINGE_COHORT_BACKEND") != "gloo" else "gloo"
        dist.init_process_group(backend=backend)
        return dist.get_rank(), dist.get_world_size(), True
    return 0, 1, False


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ---------------------------------------------------------------------------------------------------------------------
# output folder, status and summary


def _model_id(model: HingeModel, model_path: Path | None) -> str:
    from sthinge.tl._model import _sha256

    if model_path is not None:
        return _sha256(model_path)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return _sha256(model.save(Path(tmp) / "m") / "model.pt")


def _check_out_dir(out_dir: Path, model_id: str, overwrite: bool) -> bool:
    """Refuse a folder that holds another model's results (or anything else) unless ``overwrite``; returns whether
    the earlier results are to be redone (another model's, with ``overwrite``)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"`out_dir` {str(out_dir)!r} is a file, not a folder.")
    marker = out_dir / MARKER
    if marker.is_file():
        try:
            previous = json.loads(marker.read_text()).get("model_sha256")
        except (OSError, ValueError):
            previous = None
        if previous != model_id:
            if not overwrite:
                raise FileExistsError(
                    f"`out_dir` {str(out_dir)!r} holds the results of another model (sha256 "
                    f"{str(previous)[:12]}…); pass `overwrite=True` (`--overwrite`) to replace them, or choose "
                    "another folder."
                )
            return True
        return False
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            f"`out_dir` {str(out_dir)!r} is a folder that is not empty and holds no cohort results; pass "
            "`overwrite=True` (`--overwrite`) to write into it, or choose another folder."
        )
    return False


def _write_json(path: Path, obj: dict) -> None:
    with _atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=1, default=str))


def _status_path(out_dir: Path, sample_id: str) -> Path:
    return out_dir / _STATUS_DIR / f"{sample_id}.json"


def _read_status(out_dir: Path, sample_id: str) -> dict | None:
    try:
        return json.loads(_status_path(out_dir, sample_id).read_text())
    except (OSError, ValueError):
        return None


def _write_summary(out_dir: Path, slides: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for sid, path in zip(slides["sample_id"], slides["path"], strict=True):
        st = _read_status(out_dir, sid) or {}
        rows.append(
            {
                "sample_id": sid,
                "path": path,
                "status": st.get("status", "pending"),
                "n_spots": st.get("n_spots"),
                "seconds": st.get("seconds"),
                "rank": st.get("rank"),
                "result": st.get("result", ""),
                "error": st.get("error", ""),
            }
        )
    summary = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    with _atomic_path(out_dir / SUMMARY) as tmp:
        summary.to_csv(tmp, index=False)
    return summary


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read a cohort's ``summary.csv`` (text columns as text, empty numbers as NaN)."""
    text = {c: str for c in ("sample_id", "path", "status", "result", "error")}
    df = pd.read_csv(
        path, dtype=text, keep_default_na=False, na_values={c: [""] for c in ("n_spots", "seconds", "rank")}
    )
    return df[list(SUMMARY_COLUMNS)]


def prediction_hash(table) -> str:
    """sha256 of a prediction table's values (``X`` and its layers, by name), as the status files record it."""
    h = hashlib.sha256()
    for name, values in [("X", table.X), *sorted(table.layers.items())]:
        h.update(name.encode())
        h.update(np.ascontiguousarray(np.asarray(values), dtype=np.float32).tobytes())
    return h.hexdigest()


def _finished(out_dir: Path, sample_id: str, model_id: str, settings_id: str) -> dict | None:
    """The status of a slide finished earlier with this model and these settings whose result is still valid."""
    st = _read_status(out_dir, sample_id)
    if not st or st.get("status") != "done" or st.get("model_sha256") != model_id or st.get("settings") != settings_id:
        return None
    result = out_dir / f"{sample_id}.zarr"
    if not result.is_dir():
        return None
    try:
        import spatialdata as sd

        table = sd.read_zarr(result).tables[K.PRED_KEY]
        if prediction_hash(table) != st.get("hash"):
            return None
    except Exception:  # noqa: BLE001 - anything unreadable is redone
        return None
    return st


# ---------------------------------------------------------------------------------------------------------------------
# one slide


def _predict_slide(row, model, emb: dict, opts: dict, out_dir: Path) -> tuple[int, str, str]:
    """Read, grid, embed and predict one slide; write ``<sample_id>.zarr`` atomically. (n_spots, hash, path)."""
    from spatialdata import SpatialData

    from sthinge.io import read_slide
    from sthinge.pp import embed_histology, make_grid
    from sthinge.tl._predict import predict

    mpp = None if not np.isfinite(row.mpp) else float(row.mpp)
    sdata = read_slide(row.path, mpp=mpp, image_key=_IMAGE)
    make_grid(
        sdata,
        _IMAGE,
        spacing_um=opts["spacing_um"],
        spot_diameter_um=opts["spot_diameter_um"],
        tissue_only=opts["tissue_only"],
        section=row.sample_id,
        key_added=_GRID,
        table_key_added=_GRID_TABLE,
    )
    embed_histology(
        sdata,
        table_key=_GRID_TABLE,
        encoder=emb["encoder"],
        weights=emb["weights"],
        tile_size_um=emb["tile_size_um"],
        batch_size=opts["embed_batch_size"],
        num_workers=opts["num_workers"],
        device=opts["device"],
        key_added=model.embedding_key,
    )
    predict(
        sdata,
        model,
        table_key=_GRID_TABLE,
        n_steps=opts["n_steps"],
        n_samples=opts["n_samples"],
        batch_size=opts["batch_size"],
        levels=opts["levels"],
        seed=opts["seed"],
        device=opts["device"],
    )
    pred = sdata.tables[K.PRED_KEY]
    result = SpatialData(
        shapes={_GRID: sdata.shapes[_GRID]},
        tables={_GRID_TABLE: sdata.tables[_GRID_TABLE], K.PRED_KEY: pred},
        attrs=dict(sdata.attrs),
    )
    target = out_dir / f"{row.sample_id}.zarr"
    for stale in out_dir.glob(f".{target.name}.*.tmp"):  # left by a run killed while writing this slide
        shutil.rmtree(stale, ignore_errors=True)
    with _atomic_path(target) as tmp:
        _write_spatialdata(result, tmp)
    return int(pred.n_obs), prediction_hash(pred), str(target)


# ---------------------------------------------------------------------------------------------------------------------
# the cohort


def predict_cohort(
    manifest: str | os.PathLike | pd.DataFrame,
    model: HingeModel | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    spacing_um: float = 100.0,
    spot_diameter_um: float | None = None,
    tissue_only: bool = True,
    encoder: str | None = None,
    weights: str | os.PathLike | None = None,
    force_encoder: bool = False,
    n_steps: int | None = None,
    n_samples: int = 1,
    levels: Sequence[float] | None = (0.5, 0.9),
    batch_size: int | None = None,
    embed_batch_size: int = 64,
    num_workers: int = 0,
    device: str | None = None,
    seed: int = 0,
    overwrite: bool = False,
) -> pd.DataFrame:
    """Predict expression on every slide of a cohort, one result folder per slide, over all ranks, resumably.

    For each slide of ``manifest``: :func:`sthinge.io.read_slide` (lazily), :func:`sthinge.pp.make_grid` over the
    tissue, :func:`sthinge.pp.embed_histology` the way the model's training embeddings were made (its
    :attr:`~sthinge.tl.HingeModel.embedding_recipe`: encoder, weights, tile size) and :func:`sthinge.tl.predict`.
    Each slide's result is written atomically to ``out_dir/<sample_id>.zarr``: a SpatialData with the grid
    (``shapes["grid"]``), its table (``tables["grid_table"]``, with the embedding) and the prediction
    (``tables["sthinge"]``: mean, std and intervals); the slide image stays where it is.

    Several processes share the work through ``torch.distributed``: run the same call (or ``sthinge predict``) under
    ``torchrun`` or on SLURM (``srun`` with one task per GPU), and slide ``i`` goes to rank ``i mod world_size``.
    The process group is initialised from the environment when ``WORLD_SIZE`` > 1 (NCCL with GPUs, else gloo)
    unless it already is. Every slide is predicted with the same ``seed``, so the results do not depend on the number
    of processes.

    A slide that fails (a corrupt file, no tissue, ...) is recorded with its error and never stops the cohort. A
    rerun skips the slides that are finished and valid (same model, same settings, the result's values unchanged)
    and retries the others. ``out_dir/summary.csv`` (one row per slide: status, spots, seconds, rank, result, error)
    is rewritten as slides finish; watch it during a long run.

    Parameters
    ----------
    manifest
        CSV file (or DataFrame) with the column ``path`` (the slide files; relative paths are relative to the CSV)
        and optionally ``mpp`` (µm per pixel, for slides whose metadata lacks it) and ``sample_id`` (default: the
        file name without its suffix). Checked before any work: missing columns, unknown columns, missing files,
        repeated ids.
    model
        A :class:`sthinge.tl.HingeModel` or the folder it was saved to.
    out_dir
        Folder of the results. A folder holding another model's results, or other files, is refused unless
        ``overwrite``.
    spacing_um, spot_diameter_um, tissue_only
        The grid of :func:`sthinge.pp.make_grid` (default 100 µm apart, diameter = spacing, tissue only).
    encoder, weights
        Default: the model's recorded encoder and weights file (whose sha256 is checked). A different ``encoder``
        is refused unless ``force_encoder``; ``weights`` gives a new location of the recorded weights. Needed when
        the model records no recipe (its embeddings were not made by :func:`sthinge.pp.embed_histology`).
    force_encoder
        Embed with ``encoder`` / ``weights`` even though they differ from the recorded ones.
    n_steps, n_samples, levels, batch_size
        As in :func:`sthinge.tl.predict`.
    embed_batch_size, num_workers
        ``batch_size`` and ``num_workers`` of :func:`sthinge.pp.embed_histology`.
    device
        ``None``: :attr:`sthinge.settings.device`; with several ranks on GPUs, each rank uses ``cuda:LOCAL_RANK``.
    seed
        Random seed of every slide's prediction.
    overwrite
        Write into a folder that holds another model's results (which are then redone) or other files.

    Returns
    -------
    The summary table (also ``out_dir/summary.csv``), one row per slide of the manifest.

    Examples
    --------
    >>> import sthinge as st
    >>> summary = st.tl.predict_cohort("slides.csv", "my-model/", "results/", n_samples=4)  # doctest: +SKIP
    >>> summary["status"].value_counts()  # doctest: +SKIP
    """
    from sthinge._settings import settings
    from sthinge.tl._intervals import check_levels
    from sthinge.tl._predict import _as_model

    # ---- every check before any work ---------------------------------------------------------------------------
    slides = read_manifest(manifest)
    model_path = None
    if isinstance(model, str | os.PathLike):
        model_path = Path(model).expanduser()
        model_path = model_path / "model.pt" if model_path.is_dir() else model_path
    model = _as_model(model)
    spacing_um = _check_float("spacing_um", spacing_um, low=0.0, low_open=True)
    if spot_diameter_um is not None:
        spot_diameter_um = _check_float("spot_diameter_um", spot_diameter_um, low=0.0, low_open=True)
    for name, value in (("tissue_only", tissue_only), ("force_encoder", force_encoder), ("overwrite", overwrite)):
        if not isinstance(value, bool):
            raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    if n_steps is not None:
        n_steps = _check_int("n_steps", n_steps, low=1, high=int(model.config.n_steps))
    n_samples = _check_int("n_samples", n_samples, low=1)
    if batch_size is not None:
        batch_size = _check_int("batch_size", batch_size, low=1)
    embed_batch_size = _check_int("embed_batch_size", embed_batch_size, low=1)
    num_workers = _check_int("num_workers", num_workers, low=0, high=64)
    seed = _check_int("seed", seed, low=0)
    levels = check_levels(levels) if levels is not None else ()
    emb = _embedding_settings(model, encoder, weights, force_encoder)
    if not isinstance(out_dir, str | os.PathLike):
        raise TypeError(f"`out_dir` must be a path, got {type(out_dir).__name__}.")
    out_dir = Path(out_dir).expanduser()
    model_id = _model_id(model, model_path)
    redo = _check_out_dir(out_dir, model_id, overwrite)

    rank, world, initialised = _dist()
    try:
        dev = settings.resolve_device(device)
        if dev.type == "cuda" and world > 1:
            dev_name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
        else:
            dev_name = str(dev)
        opts = {
            "spacing_um": spacing_um,
            "spot_diameter_um": spot_diameter_um,
            "tissue_only": tissue_only,
            "n_steps": n_steps,
            "n_samples": n_samples,
            "levels": levels,
            "batch_size": batch_size,
            "embed_batch_size": embed_batch_size,
            "num_workers": num_workers,
            "seed": seed,
            "device": dev_name,
        }
        recorded = {
            k: v for k, v in opts.items() if k not in ("batch_size", "embed_batch_size", "num_workers", "device")
        }
        settings_id = hashlib.sha256(json.dumps({**recorded, **emb}, sort_keys=True, default=str).encode()).hexdigest()
        if rank == 0:
            out_dir.mkdir(parents=True, exist_ok=True)
            _probe_write(out_dir)
            (out_dir / _STATUS_DIR).mkdir(exist_ok=True)
            if redo:  # another model's results, replaced with `overwrite`
                for stale in (out_dir / _STATUS_DIR).glob("*.json"):
                    stale.unlink()
            _write_json(
                out_dir / MARKER,
                {"model_sha256": model_id, "model": str(model_path or ""), "settings": {**recorded, **emb}},
            )
            _write_summary(out_dir, slides)
        _barrier(world)

        mine = slides.iloc[rank::world]
        counts = {"done": 0, "skipped": 0, "failed": 0}
        bar = progress(
            mine.itertuples(index=False), desc=f"slides (rank {rank}/{world})", total=len(mine), position=rank
        )
        for row in bar:
            if _finished(out_dir, row.sample_id, model_id, settings_id) is not None:
                counts["skipped"] += 1
                logg.info(f"predict_cohort [rank {rank}]: {row.sample_id}: finished earlier, skipped.")
                continue
            start = time.perf_counter()
            status: dict[str, Any] = {
                "sample_id": row.sample_id,
                "path": row.path,
                "rank": rank,
                "model_sha256": model_id,
                "settings": settings_id,
            }
            try:
                n_spots, digest, result = _predict_slide(row, model, emb, opts, out_dir)
                status.update(status="done", n_spots=n_spots, hash=digest, result=result, error="")
                counts["done"] += 1
            except Exception as err:  # noqa: BLE001 - a failing slide is recorded, never stops the cohort
                status.update(status="failed", n_spots=None, hash=None, result="", error=f"{type(err).__name__}: {err}")
                status["traceback"] = traceback.format_exc(limit=20)
                counts["failed"] += 1
            status["seconds"] = round(time.perf_counter() - start, 3)
            status["finished"] = datetime.datetime.now(datetime.UTC).isoformat()
            _write_json(_status_path(out_dir, row.sample_id), status)
            _write_summary(out_dir, slides)
            what = f"{status['n_spots']} spots" if status["status"] == "done" else status["error"]
            logg.info(
                f"predict_cohort [rank {rank}]: {row.sample_id}: {status['status']} ({what}) in "
                f"{status['seconds']:.1f} s."
            )
        logg.info(
            f"predict_cohort [rank {rank}]: {counts['done']} predicted, {counts['skipped']} finished earlier, "
            f"{counts['failed']} failed, of {len(mine)} slide(s)."
        )
        _barrier(world)
        if rank == 0:
            _write_summary(out_dir, slides)
        _barrier(world)
        return read_summary(out_dir / SUMMARY)
    finally:
        if initialised:
            import torch.distributed as dist

            dist.destroy_process_group()
