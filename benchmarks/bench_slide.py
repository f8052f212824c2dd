"""Whole-slide throughput and memory: ``read_slide`` + ``make_grid``, ``embed_histology``, ``tl.predict`` vs slide size.

A synthetic H&E-like pyramidal OME-TIFF of S x S pixels at 0.5 µm per pixel (pink tissue blobs covering about
half of it on a white background, with stain fields and pixel noise) is written tile by tile with tifffile: every
512 x 512 tile of every pyramid level (halved down to the first level with both sides <= 2048 px) is computed from
a procedural function of its level-0 coordinates, so neither the writer nor anything else ever holds a whole level.
Files are cached as ``<cachedir>/bench/slide_<S>_<compression>.ome.tif``.

For every size the pipeline runs as three steps, each in a fresh child process, so that each step's peak memory
is its own:

1. ``grid``: ``io.read_slide`` (lazy) and ``pp.make_grid(spacing_um=, spot_diameter_um=, tissue_only=True)``;
2. ``embed``: ``pp.embed_histology(encoder="he-stats")`` on the grid's table (the slide opened again lazily);
3. ``predict``: ``tl.predict(n_steps=2, n_samples=1)`` with a tiny-preset HINGE model (fitted once, cached, on
   ``datasets.synthetic`` with ``he-stats`` embeddings: ``tl.fit(backbone="tiny", max_epochs=1)``).

Between steps only the grid's shapes and table are persisted (a SpatialData without the image, written with
``sdata.write``; the next step reads it with ``spatialdata.read_zarr`` and re-attaches the slide with
``read_slide``), so the slide is never copied into a .zarr. Each child records

* ``rss_imports``: resident memory after importing numpy, pandas, anndata, spatialdata, dask, scipy, skimage,
  torch, tiffslide and sthinge (the baseline);
* ``peak``: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` at the end of the child: the peak of the whole step
  (loading its inputs, the step, persisting its output);
* ``peak - rss_imports``: what the step needed on top of the interpreter and its libraries;
* ``peak_step - rss_before``: the step alone: the peak while it runs (``VmHWM``, reset through
  ``/proc/self/clear_refs`` just before it) minus the RSS just before it (after its inputs are loaded);

and the wall time of the step itself (without loading its inputs and writing its output, recorded apart), and the
number of spots. Runs are appended to ``--runs`` (JSON lines); ``--steps`` reruns some steps on the persisted
outputs of the others; ``--report`` writes the tables of the latest run of each size and step (and a line for
embed runs with another ``--num-workers``).

Examples
--------
    PYTHONPATH=src nice -n 10 python benchmarks/bench_slide.py --sizes 10000 40000 --shared
    PYTHONPATH=src python benchmarks/bench_slide.py --sizes 4096 --runs /tmp/slide.jsonl     # a quick check
    PYTHONPATH=src python benchmarks/bench_slide.py --report --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

MARK = "bench_slide"
TITLE = "Whole-slide throughput and memory: `read_slide`, `make_grid`, `embed_histology`, `predict` vs slide size"
STEPS = ("grid", "embed", "predict")
MPP = 0.5  # µm per level-0 pixel of the synthetic slides
TILE = 512  # tile side of the TIFF (every level)
MIN_SIDE = 2048  # the pyramid is halved down to the first level with both sides <= this (make_grid's tissue level)
IMAGE_KEY = "slide_image"  # -> section "slide", shapes "slide_grid", table "slide_grid_table" (make_grid's names)
SHAPES_KEY = "slide_grid"
TABLE_KEY = "slide_grid_table"
N_GENES = 20
# tissue: ellipses (centre y, centre x, semi-axis y, semi-axis x, angle) in units of the slide side
BLOBS = (
    (0.30, 0.32, 0.22, 0.27, 0.35),
    (0.64, 0.66, 0.24, 0.29, -0.50),
    (0.78, 0.25, 0.15, 0.19, 0.90),
)
# optical densities of haematoxylin and eosin (Ruifrok & Johnston), per unit concentration
OD_H = np.array([0.65, 0.70, 0.29], dtype=np.float32)
OD_E = np.array([0.07, 0.99, 0.11], dtype=np.float32)


# ------------------------------------------------------------------------------------------------------------
# the synthetic slide, tile by tile
# ------------------------------------------------------------------------------------------------------------
def _level_sides(size: int) -> list[int]:
    sides = [size]
    while sides[-1] > MIN_SIDE:
        sides.append(sides[-1] // 2)
    return sides


def _tile(size: int, side: int, level: int, ty: int, tx: int, seed: int = 0) -> np.ndarray:
    """The ``(ty, tx)`` tile (512 x 512 x 3 uint8) of the level of side ``side`` of a ``size`` px slide.

    Every pixel is a function of its centre in level-0 pixels (and of a per-tile noise seed), so each level is
    computed directly, never from the one above it.
    """
    f = size / side  # level-0 pixels per pixel of this level
    y0 = (ty * TILE + np.arange(TILE, dtype=np.float64) + 0.5) * f  # level-0 pixel centres of the tile's rows
    x0 = (tx * TILE + np.arange(TILE, dtype=np.float64) + 0.5) * f
    yn, xn = (y0 / size)[:, None], (x0 / size)[None, :]
    tissue = np.zeros((TILE, TILE), dtype=bool)
    for cy, cx, ry, rx, angle in BLOBS:
        dy, dx = yn - cy, xn - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        tissue |= (u / rx) ** 2 + (v / ry) ** 2 <= 1.0
    rng = np.random.default_rng([seed, level, ty, tx])
    noise = rng.standard_normal((2, TILE, TILE), dtype=np.float32)
    if not tissue.any():
        return np.clip(243.0 + 3.0 * noise[0], 0, 255).astype(np.uint8)[..., None].repeat(3, axis=2)
    # stain fields in µm (separable, so one outer product each), plus pixel noise that averages out on coarse levels
    yu, xu = (y0 * MPP).astype(np.float32), (x0 * MPP).astype(np.float32)
    h = 0.30 + 0.20 * np.outer(np.sin(2 * np.pi * yu / 700.0), np.cos(2 * np.pi * xu / 1100.0))
    e = 0.55 + 0.15 * np.outer(np.cos(2 * np.pi * yu / 1500.0), np.ones_like(xu)) + 0.1 * np.sin(2 * np.pi * xu / 900.0)
    amp = 0.25 / math.sqrt(f)
    h = np.maximum(h + amp * noise[0], 0.0)
    e = np.maximum(e + 0.5 * amp * noise[1], 0.0)
    od = h[..., None] * OD_H + e[..., None] * OD_E  # (512, 512, 3)
    rgb = 255.0 * np.exp(-od)
    background = 243.0 + 3.0 * noise[0]
    rgb = np.where(tissue[..., None], rgb, background[..., None])
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _tiles(size: int, side: int, level: int):
    for ty in range(-(-side // TILE)):
        for tx in range(-(-side // TILE)):
            yield _tile(size, side, level, ty, tx)


def write_slide(path: Path, size: int, compression: str = "jpeg") -> Path:
    """Write the ``size`` x ``size`` px synthetic slide (OME-TIFF pyramid in SubIFDs, 0.5 µm/px) tile by tile."""
    import tifffile

    sides = _level_sides(size)
    tmp = path.with_name(path.name + ".tmp")
    options = {"tile": (TILE, TILE), "photometric": "rgb", "compression": compression, "dtype": np.uint8}
    if compression == "jpeg":
        options["compressionargs"] = {"level": 90}
    metadata = {
        "axes": "YXS",
        "PhysicalSizeX": MPP,
        "PhysicalSizeXUnit": "µm",
        "PhysicalSizeY": MPP,
        "PhysicalSizeYUnit": "µm",
    }
    with tifffile.TiffWriter(tmp, bigtiff=True, ome=True) as tif:
        tif.write(_tiles(size, size, 0), shape=(size, size, 3), subifds=len(sides) - 1, metadata=metadata, **options)
        for level, side in enumerate(sides[1:], start=1):
            tif.write(_tiles(size, side, level), shape=(side, side, 3), subfiletype=1, **options)
    os.replace(tmp, path)
    return path


# ------------------------------------------------------------------------------------------------------------
# memory
# ------------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _step_start(rec: dict) -> None:
    """Record the RSS just before a step and reset the kernel's peak-RSS counter (Linux ``clear_refs``)."""
    import gc

    gc.collect()
    rec["rss_before"] = _rss_bytes()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        rec["_reset"] = True
    except OSError:
        rec["_reset"] = False


def _step_end(rec: dict) -> None:
    """Record the peak RSS since :func:`_step_start` (``VmHWM``; None where it could not be reset)."""
    peak = None
    if rec.pop("_reset"):
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    rec["peak_step"] = peak


def _ru_maxrss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


# ------------------------------------------------------------------------------------------------------------
# children: one step each
# ------------------------------------------------------------------------------------------------------------
def _imports(threads: int) -> int:
    """Import everything any step uses, so that every step starts from the same baseline; returns that RSS."""
    import anndata  # noqa: F401
    import dask.array  # noqa: F401
    import pandas  # noqa: F401
    import scipy.ndimage  # noqa: F401
    import skimage.filters  # noqa: F401
    import spatialdata  # noqa: F401
    import tiffslide  # noqa: F401
    import torch

    import sthinge as st
    import sthinge.models  # noqa: F401

    if threads:
        torch.set_num_threads(threads)
    st.settings.verbosity = 1  # warnings only
    import gc

    gc.collect()
    return _rss_bytes()


def _persist(sdata, path: Path) -> None:
    """Write only the grid's shapes and table (never the image) to ``path`` (a .zarr folder, replaced)."""
    from spatialdata import SpatialData

    if path.exists():
        shutil.rmtree(path)
    SpatialData(shapes={SHAPES_KEY: sdata.shapes[SHAPES_KEY]}, tables={TABLE_KEY: sdata.tables[TABLE_KEY]}).write(path)


def _open(path: Path, slide: Path | None):
    """The persisted shapes + table, with the slide attached again (lazily) when ``slide`` is given."""
    import spatialdata

    import sthinge as st

    sdata = spatialdata.read_zarr(path)
    if slide is not None:
        opened = st.io.read_slide(slide, image_key=IMAGE_KEY)
        sdata.images[IMAGE_KEY] = opened.images[IMAGE_KEY]
        sdata.attrs.update(opened.attrs)
    return sdata


def child(args) -> dict:
    rss_imports = _imports(args.threads)
    import sthinge as st

    work, slide = Path(args.work), Path(args.slide) if args.slide else None
    rec: dict = {"rss_imports": rss_imports}
    if args.child == "model":
        t = time.perf_counter()
        sdata = st.datasets.synthetic(n_sections=2, n_spots=64, n_genes=N_GENES, seed=0)
        st.pp.normalize(sdata)
        st.pp.select_genes(sdata, n_top=N_GENES, vocab="cellfm-80m")
        st.pp.embed_histology(sdata, encoder="he-stats", batch_size=64)
        model = st.tl.fit(
            sdata,
            backbone="tiny",
            max_epochs=1,
            min_epochs=0,
            curriculum_epochs=1,
            batch_size=16,
            val_metric="loss",
            calibration_samples=1,
            calibration_steps=args.n_steps,
        )
        model.save(work, overwrite=True)
        rec.update(seconds=time.perf_counter() - t, n_genes=len(model.genes))
    elif args.child == "grid":
        _step_start(rec)
        t = time.perf_counter()
        sdata = st.io.read_slide(slide, image_key=IMAGE_KEY)
        rec["read_seconds"] = time.perf_counter() - t
        t = time.perf_counter()
        st.pp.make_grid(
            sdata, IMAGE_KEY, spacing_um=args.spacing_um, spot_diameter_um=args.diameter_um, tissue_only=True
        )
        rec["seconds"] = time.perf_counter() - t + rec["read_seconds"]
        _step_end(rec)
        image = sdata.images[IMAGE_KEY]
        h, w = image["scale0"]["image"].shape[1:]
        step = args.spacing_um / MPP
        rec["grid_points"] = len(np.arange(step / 2, w, step)) * len(np.arange(step / 2, h, step))
        rec["levels"] = [list(image[k]["image"].shape[1:]) for k in sorted(image.children)]
        t = time.perf_counter()
        _persist(sdata, work / "grid.zarr")
        rec["persist_seconds"] = time.perf_counter() - t
    elif args.child == "embed":
        t = time.perf_counter()
        sdata = _open(work / "grid.zarr", slide)
        rec["load_seconds"] = time.perf_counter() - t
        _step_start(rec)
        t = time.perf_counter()
        st.pp.embed_histology(
            sdata, encoder="he-stats", table_key=TABLE_KEY, batch_size=args.batch_size, num_workers=args.num_workers
        )
        rec["seconds"] = time.perf_counter() - t
        _step_end(rec)
        table = sdata.tables[TABLE_KEY]
        emb = np.asarray(table.obsm["X_he-stats"])
        assert np.isfinite(emb).all()
        rec["embedding_level"] = int(table.uns["X_he-stats"]["level"]["slide"])
        rec["embedding_sd"] = float(emb.std(axis=0).mean())  # > 0: the features vary across spots
        t = time.perf_counter()
        _persist(sdata, work / "embed.zarr")
        rec["persist_seconds"] = time.perf_counter() - t
    elif args.child == "predict":
        from sthinge.tl import HingeModel

        t = time.perf_counter()
        model = HingeModel.load(args.model)
        sdata = _open(work / "embed.zarr", None)  # predict reads the embedding only, not the image
        rec["load_seconds"] = time.perf_counter() - t
        _step_start(rec)
        t = time.perf_counter()
        st.tl.predict(sdata, model, table_key=TABLE_KEY, n_steps=args.n_steps, n_samples=1, device="cpu")
        rec["seconds"] = time.perf_counter() - t
        _step_end(rec)
        pred = sdata.tables["sthinge"]
        arrays = [pred.X, *pred.layers.values()]
        rec["outputs"] = sum(np.asarray(a).nbytes for a in arrays) + int(pred.obs.memory_usage(deep=True).sum())
        assert np.isfinite(pred.X).all()
        rec["pred_shape"] = list(pred.shape)
    if args.child != "model":
        rec["n_spots"] = int(sdata.tables[TABLE_KEY].n_obs)
    rec["peak"] = _ru_maxrss_bytes()
    return rec


# ------------------------------------------------------------------------------------------------------------
# parent
# ------------------------------------------------------------------------------------------------------------
def _run_child(step: str, args, **paths) -> dict:
    cmd = [sys.executable, __file__, "--child", step, "--threads", str(args.threads), "--n-steps", str(args.n_steps)]
    cmd += ["--spacing-um", str(args.spacing_um), "--diameter-um", str(args.diameter_um)]
    cmd += ["--batch-size", str(args.batch_size), "--num-workers", str(args.num_workers)]
    for name, value in paths.items():
        cmd += [f"--{name}", str(value)]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"step {step!r} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _mib(b: float) -> float:
    return b / 2**20


def _config(args) -> dict:
    return {
        "spacing_um": args.spacing_um,
        "diameter_um": args.diameter_um,
        "num_workers": args.num_workers,
        "compression": args.compression,
    }


def run(args) -> None:
    import torch

    from sthinge._settings import settings

    cache = settings.cachedir / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    model_dir = cache / f"slide_model_tiny_k{args.n_steps}"
    if not (model_dir / "model.pt").exists():
        r = _run_child("model", args, work=model_dir)
        print(f"model: fitted in {r['seconds']:.0f} s ({r['n_genes']} genes) -> {model_dir}", file=sys.stderr)
    common = {
        "kind": "slide",
        "mpp": MPP,
        "threads": args.threads,
        "batch_size": args.batch_size,
        "n_steps": args.n_steps,
        "n_genes": N_GENES,
        "shared": args.shared,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "date": datetime.date.today().isoformat(),
        **_config(args),
    }
    for size in args.sizes:
        slide = cache / f"slide_{size}_{args.compression}.ome.tif"
        write_seconds = None
        if not slide.exists():
            t = time.perf_counter()
            write_slide(slide, size, args.compression)
            write_seconds = time.perf_counter() - t
            print(f"S={size}: wrote {slide} ({slide.stat().st_size / 2**20:.0f} MiB) in {write_seconds:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip
        work = cache / f"slide_{size}_run"
        work.mkdir(exist_ok=True)
        for step in args.steps:
            paths = {"work": work, "slide": slide}
            if step == "predict":
                paths["model"] = model_dir
            r = _run_child(step, args, **paths)
            rec = {
                **common,
                "size": size,
                "step": step,
                "file_bytes": slide.stat().st_size,
                "write_seconds": write_seconds,
                **r,
            }
            with open(args.runs[0], "a") as fh:
                fh.write(json.dumps(rec) + "\n")
            print(
                f"S={size:>6} {step:>7}: {r['n_spots']:>6} spots, {r['seconds']:7.1f} s, peak {_mib(r['peak']):7.1f} "
                f"MiB (imports {_mib(r['rss_imports']):.1f}, +{_mib(r['peak'] - r['rss_imports']):.1f})",
                file=sys.stderr,
                flush=True,
            )


# ------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------
def _records(runs: list[Path]) -> list[dict]:
    return [json.loads(x) for f in runs if f.exists() for x in f.read_text().splitlines() if x.strip()]


def _in_step(r: dict) -> float | None:
    """MiB the step itself added: its own peak (``VmHWM`` reset just before it) minus the RSS just before it."""
    if r.get("peak_step") is None or r.get("rss_before") is None:
        return None
    return _mib(r["peak_step"] - r["rss_before"])


def _cell(value: float | None, fmt: str = ".0f") -> str:
    return "–" if value is None else format(value, fmt)


def report(runs: list[Path], args) -> str:
    """The tables of the latest run of every (size in ``args.sizes``, step) in the configuration of ``args``."""
    want = _config(args)
    latest: dict[tuple[int, str], dict] = {}
    for r in _records(runs):
        if r.get("kind") != "slide" or r.get("size") not in args.sizes:
            continue
        if all(r.get(k) == v for k, v in want.items()):
            latest[(r["size"], r["step"])] = r
    if not latest:
        return f"No runs in {', '.join(str(f) for f in runs)} for {want}.\n"
    sizes = sorted({s for s, _ in latest})
    meta = next(iter(latest.values()))
    shared = any(r.get("shared") for r in latest.values())
    dates = sorted({r["date"] for r in latest.values()})
    lines = [
        f"Machine: {meta['machine']}, {meta['cpu_count']} CPU cores{', shared with other jobs' if shared else ''}; "
        f"Python {meta['python']}, torch {meta['torch']}; {', '.join(dates)}. Written by "
        f"`benchmarks/bench_slide.py --report` from {', '.join(f'`{f.name}`' for f in runs)}.  ",
        f"Synthetic H&E-like OME-TIFF pyramids at {MPP} µm/px ({meta['compression']}, {TILE} px tiles, halved down "
        f"to <= {MIN_SIDE} px), written tile by tile. Grid: `spacing_um={meta['spacing_um']:g}`, "
        f'`spot_diameter_um={meta["diameter_um"]:g}`, `tissue_only=True`. `embed_histology(encoder="he-stats", '
        f"batch_size={meta['batch_size']}, num_workers={meta['num_workers']})`; `tl.predict(n_steps="
        f"{meta['n_steps']}, n_samples=1)` (default `levels`: mean, std and two intervals written) with a "
        f"tiny-preset model ({meta['n_genes']} genes, `tl.fit(max_epochs=1)` on `datasets.synthetic`); torch threads "
        f"= {meta['threads']}. Each step runs in a fresh process; between steps only the grid's shapes and table "
        "are persisted (`sdata.write` of a SpatialData without the image, `spatialdata.read_zarr`, the slide "
        "re-opened lazily with `read_slide`; `predict` does not need the image). **Peak**: `ru_maxrss` at the end "
        "of the step's process (loading its inputs, the step, writing its output); **baseline**: RSS after the "
        "imports (the same libraries in every step); **step alone**: the peak during the step (`VmHWM` reset "
        "through `/proc/self/clear_refs` just before it) minus the RSS just before it, '–' where the run did not "
        "record it; **time**: the step alone (`grid`: `read_slide` + `make_grid`). Absolute times are of this "
        f"{meta['cpu_count']}-core machine{', shared with other jobs' if shared else ''}.",
    ]
    for size in sizes:
        rows = [latest[(size, s)] for s in STEPS if (size, s) in latest]
        r0 = rows[0]
        mm = size * MPP / 1000
        grid = latest.get((size, "grid"), {})
        cover = f" ({r0['n_spots'] / grid['grid_points']:.0%} of {grid['grid_points']:,} grid points)" if grid else ""
        levels = " / ".join(str(lv[0]) for lv in grid.get("levels", []))
        lines += [
            "",
            f"**{size:,} x {size:,} px** ({mm:g} x {mm:g} mm; file {r0['file_bytes'] / 2**20:,.0f} MiB"
            f"{', levels ' + levels + ' px' if levels else ''}): {r0['n_spots']:,} spots{cover}.",
            "",
            "| step | spots | time (s) | s / 1,000 spots | baseline (MiB) | peak (MiB) | peak − baseline (MiB) | "
            "step alone (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            lines.append(
                f"| {r['step']} | {r['n_spots']:,} | {r['seconds']:.1f} | {1000 * r['seconds'] / r['n_spots']:.2f} | "
                f"{_mib(r['rss_imports']):.0f} | {_mib(r['peak']):.0f} | {_mib(r['peak'] - r['rss_imports']):.0f} | "
                f"{_cell(_in_step(r))} |"
            )
        if (size, "predict") in latest and latest[(size, "predict")].get("outputs") is not None:
            lines.append(
                f"\n`predict`'s outputs (the prediction table's `X`, `layers` and `obs`): "
                f"{_mib(latest[(size, 'predict')]['outputs']):.1f} MiB."
            )
    if len(sizes) >= 2:
        a, b = sizes[0], sizes[-1]
        lines += [
            "",
            f"{b:,} px against {a:,} px (target for memory: flat within 20 %, i.e. a ratio <= 1.20):",
            "",
            "| step | spots ratio | peak ratio | (peak − baseline) ratio | step alone ratio | s / 1,000 spots ratio |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in STEPS:
            if (a, s) in latest and (b, s) in latest:
                ra, rb = latest[(a, s)], latest[(b, s)]
                d_a, d_b = ra["peak"] - ra["rss_imports"], rb["peak"] - rb["rss_imports"]
                i_a, i_b = _in_step(ra), _in_step(rb)
                alone = None if i_a is None or i_b is None or i_a <= 0 else i_b / i_a
                lines.append(
                    f"| {s} | {rb['n_spots'] / ra['n_spots']:.1f} | {rb['peak'] / ra['peak']:.2f} | "
                    f"{d_b / d_a:.2f} | {_cell(alone, '.2f')} | "
                    f"{(rb['seconds'] / rb['n_spots']) / (ra['seconds'] / ra['n_spots']):.2f} |"
                )
        pa, pb = latest.get((a, "predict"), {}), latest.get((b, "predict"), {})
        if _in_step(pa) is not None and _in_step(pb) is not None and "outputs" in pa and "outputs" in pb:
            oa, ob = _in_step(pa) - _mib(pa["outputs"]), _in_step(pb) - _mib(pb["outputs"])
            lines += [
                "",
                f"`predict` alone beyond its outputs (which grow with the spots): {oa:.1f} MiB at {a:,} px, "
                f"{ob:.1f} MiB at {b:,} px (ratio {ob / oa:.2f}).",
            ]
    lines += _other_workers(runs, args, latest)
    return "\n".join(lines) + "\n"


def _other_workers(runs: list[Path], args, latest: dict) -> list[str]:
    """A sentence per embed run with another ``num_workers`` (same slide and grid) against the table's."""
    others: dict[tuple[int, int], dict] = {}
    for r in _records(runs):
        same = all(r.get(k) == v for k, v in _config(args).items() if k != "num_workers")
        if r.get("kind") == "slide" and r.get("step") == "embed" and same and r.get("num_workers") != args.num_workers:
            others[(r["size"], r["num_workers"])] = r
    out = []
    for (size, workers), r in sorted(others.items()):
        base = latest.get((size, "embed"))
        if base is None:
            continue
        tile = 3 * r["n_spots"] * _crop_side(r) ** 2
        out += [
            "",
            f"`embed_histology(num_workers={workers})` on the {size:,} px slide: peak − baseline "
            f"{_mib(r['peak'] - r['rss_imports']):.0f} MiB against {_mib(base['peak'] - base['rss_imports']):.0f} "
            f"MiB with `num_workers={args.num_workers}` ({r['seconds']:.1f} s against {base['seconds']:.1f} s); "
            f"all {r['n_spots']:,} uint8 crops of this slide would take {_mib(tile):.0f} MiB.",
        ]
    return out


def _crop_side(r: dict) -> int:
    """Side (pixels) of the he-stats crop read on the embedding's pyramid level (a window of 2 tiles of 112 µm)."""
    return int(round(2 * 112.0 / r["mpp"] / 2 ** r.get("embedding_level", 0)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10000, 40000], help="slide sides in pixels")
    p.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS, help="rerun only these (in order)")
    p.add_argument("--spacing-um", type=float, default=100.0)
    p.add_argument("--diameter-um", type=float, default=55.0)
    p.add_argument("--compression", default="jpeg", choices=["jpeg", "zlib"])
    p.add_argument("--batch-size", type=int, default=64, help="embed_histology's batch_size")
    p.add_argument("--num-workers", type=int, default=0, help="embed_histology's num_workers")
    p.add_argument("--n-steps", type=int, default=2, help="sampler steps of predict")
    p.add_argument("--threads", type=int, default=1, help="torch threads in the children (0: torch's default)")
    p.add_argument("--shared", action="store_true", help="say in the table that the machine was shared")
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        help="JSON-lines files of runs (default: <cache>/bench/runs_slide.jsonl); new runs go to the first",
    )
    p.add_argument("--report", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--child", choices=["model", *STEPS], help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    p.add_argument("--slide", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args)))
        return 0
    if args.runs is None:
        from sthinge._settings import settings

        args.runs = [settings.cachedir / "bench" / "runs_slide.jsonl"]
    if not args.report:
        args.runs[0].parent.mkdir(parents=True, exist_ok=True)
        run(args)
    text = report(args.runs, args)
    if args.out is None:
        print(text)
    else:
        from _report import write_section

        write_section(args.out, MARK, TITLE, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
