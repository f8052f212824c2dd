"""Cohort throughput: ``sthinge predict`` over a cohort of synthetic slides with 1 and with 2 processes, one run.

The cohort is ``--n-slides`` synthetic H&E-like OME-TIFF pyramids of ``--size`` px a side at 0.5 µm/px (the
slides of ``bench_slide.py``, each with its own noise seed), listed in a manifest. A tiny-preset model is fitted once
on ``datasets.synthetic`` with ``he-stats`` embeddings (``tl.fit(backbone="tiny", max_epochs=1)``) and saved. Then,
for each process count in ``--procs`` (in one run, side by side), the whole cohort goes through ``sthinge predict``
into a fresh results folder: one process, or ``P`` processes started with the environment ``torchrun`` sets
(``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``PORT``; gloo), each with ``OMP_NUM_THREADS`` = cores / P. Every rank
runs inside a small wrapper that reports its peak resident memory (``ru_maxrss``).

Reported: wall time of the whole cohort (process start to the last rank's end), slides per hour, the ratio of the
throughputs, per-slide time (from the summary) and each rank's peak memory; the predictions of the runs are checked
to be identical.

    PYTHONPATH=src python benchmarks/bench_cohort.py --n-slides 8 --size 4096 --procs 1 2 --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

MARK = "bench_cohort"
ROOT = Path(__file__).resolve().parents[1]

WRAPPER = """
import json, resource, sys
from sthinge._cli import main
code = main(sys.argv[1:])
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print("BENCH_PEAK " + json.dumps({"peak": peak, "code": code}), flush=True)
"""


def _env(**extra) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(work: Path) -> Path:
    import sthinge as st

    st.settings.verbosity = 1
    sdata = st.datasets.synthetic(n_sections=2, n_spots=64, n_genes=20, seed=0)
    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, n_top=20, vocab="cellfm-80m")
    st.pp.embed_histology(sdata, encoder="he-stats")
    model = st.tl.fit(
        sdata,
        backbone="tiny",
        max_epochs=1,
        min_epochs=0,
        curriculum_epochs=1,
        batch_size=16,
        val_metric="loss",
        calibration_samples=1,
        calibration_steps=2,
    )
    return model.save(work / "model", overwrite=True)


def _slides(work: Path, n: int, size: int) -> Path:
    import bench_slide

    folder = work / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"slide{i:03d}.ome.tif"
        if not path.exists():
            bench_slide.BLOBS = tuple(_blobs(i))  # a different tissue layout per slide
            bench_slide.write_slide(path, size, compression="jpeg")
        paths.append(path)
    manifest = work / "manifest.csv"
    manifest.write_text("path\n" + "\n".join(str(p) for p in paths) + "\n")
    return manifest


def _blobs(seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [
        (float(rng.uniform(0.3, 0.7)), float(rng.uniform(0.3, 0.7)), 0.25, 0.3, float(rng.uniform(0, 3))),
        (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)), 0.15, 0.2, float(rng.uniform(0, 3))),
    ]


def _run(procs: int, model: Path, manifest: Path, out: Path, args) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    cores = os.cpu_count() or 1
    threads = max(1, cores // procs)
    port = _free_port()
    cmd = [sys.executable, "-c", WRAPPER, "predict", str(model), str(manifest), "--out", str(out), "--quiet"]
    cmd += ["--steps", str(args.n_steps), "--samples", str(args.n_samples), "--spacing-um", str(args.spacing_um)]
    t0 = time.perf_counter()
    ranks = []
    for r in range(procs):
        extra = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        if procs > 1:
            extra.update(RANK=r, LOCAL_RANK=r, WORLD_SIZE=procs, MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
            extra["STHINGE_COHORT_BACKEND"] = "gloo"
        ranks.append(
            subprocess.Popen(cmd, env=_env(**extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    peaks = []
    for p in ranks:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"sthinge predict failed ({p.returncode}):\n{stderr[-3000:]}")
        line = next(x for x in stdout.splitlines() if x.startswith("BENCH_PEAK "))
        peaks.append(json.loads(line.removeprefix("BENCH_PEAK "))["peak"])
    wall = time.perf_counter() - t0
    import pandas as pd

    summary = pd.read_csv(out / "summary.csv")
    assert (summary["status"] == "done").all(), summary
    return {
        "procs": procs,
        "threads": threads,
        "wall": wall,
        "slides": len(summary),
        "spots": int(summary["n_spots"].sum()),
        "slide_seconds": summary["seconds"].tolist(),
        "peaks": peaks,
    }


def _hashes(out: Path) -> dict:
    import spatialdata as sd

    from sthinge.tl._cohort import prediction_hash

    return {p.stem: prediction_hash(sd.read_zarr(p).tables["sthinge"]) for p in sorted(out.glob("*.zarr"))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-slides", type=int, default=8)
    p.add_argument("--size", type=int, default=4096, help="slide side in pixels (0.5 µm/px)")
    p.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--spacing-um", type=float, default=100.0)
    p.add_argument("--n-steps", type=int, default=2)
    p.add_argument("--n-samples", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="folder for slides, model and results (default: cache)")
    p.add_argument("--shared", action="store_true", help="say in the table that the machine was shared")
    p.add_argument("--out", help="markdown file whose section to replace / append")
    args = p.parse_args(argv)
    import sthinge as st

    work = args.work or st.settings.cachedir / "bench" / "cohort"
    work.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    manifest = _slides(work, args.n_slides, args.size)
    print(f"slides ready in {time.perf_counter() - t:.0f} s", file=sys.stderr)
    model = _model(work)
    runs = []
    for procs in args.procs:
        r = _run(procs, model, manifest, work / f"results_{procs}", args)
        runs.append(r)
        print(f"{procs} process(es): {r['wall']:.1f} s for {r['slides']} slides", file=sys.stderr, flush=True)
    hashes = [_hashes(work / f"results_{r['procs']}") for r in runs]
    identical = all(h == hashes[0] for h in hashes)

    import torch

    head = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores{', shared with other jobs' if args.shared else ''}"
        f", no GPU; Python {platform.python_version()}, torch {torch.__version__}; "
        f"{datetime.date.today().isoformat()}. Written by `benchmarks/bench_cohort.py`.  \n"
        f"{args.n_slides} synthetic slides of {args.size:,} x {args.size:,} px at 0.5 µm/px (OME-TIFF pyramids, jpeg), "
        f"{runs[0]['spots'] // max(args.n_slides, 1):,} pseudo-spots per slide on average ({args.spacing_um:g} µm "
        f"grid over the tissue); `sthinge predict --steps {args.n_steps} --samples {args.n_samples}` with a "
        "tiny-preset model (20 genes, he-stats embeddings). Each process count in a fresh results folder, in one "
        "run; P processes as torchrun starts them (gloo), each with cores / P threads. Wall: from starting the "
        "processes to the last one's end (imports included).\n\n"
        "| processes | threads each | wall (s) | slides / hour | per slide (s, median) "
        "| peak memory per process (MiB) |\n"
        "|---:|---:|---:|---:|---:|---|\n"
    )
    lines = [
        f"| {r['procs']} | {r['threads']} | {r['wall']:.1f} | {3600 * r['slides'] / r['wall']:,.0f} | "
        f"{np.median(r['slide_seconds']):.1f} | {', '.join(f'{x / 2**20:.0f}' for x in r['peaks'])} |"
        for r in runs
    ]
    foot = ""
    if len(runs) >= 2:
        a, b = runs[0], runs[-1]
        foot = (
            f"\n\nThroughput {b['procs']} vs {a['procs']} process(es): {a['wall'] / b['wall']:.2f}x. "
            f"Predictions identical across the runs (sha256 of every slide's table): {'yes' if identical else 'NO'}."
        )
    table = head + "\n".join(lines) + foot + "\n"
    print(table)
    if args.out:
        write_section(args.out, MARK, "Cohort throughput: `sthinge predict` with 1 and 2 processes", table)


if __name__ == "__main__":
    main()
