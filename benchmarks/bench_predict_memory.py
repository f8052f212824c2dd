"""Peak memory of ``sthinge.tl.predict`` against the number of spots (issues 6 and 9).

``tl.predict`` samples spots in fixed chunks and writes into preallocated outputs, so the memory it needs beyond
its outputs should not grow with the number of spots. For each N a fresh child process builds a synthetic AnnData
(N spots, a ``cond_dim``-wide embedding) and a random-weight tiny-preset HINGE model, then runs ``tl.predict``
(AnnData input, ``inplace=False``) and reports

* ``rss_before``: resident memory just before ``predict`` (interpreter, torch, model, the input AnnData);
* ``peak``: the highest resident memory *during* ``predict`` (Linux ``VmHWM`` after resetting it through
  ``/proc/self/clear_refs``; where that is not possible, ``ru_maxrss``, the peak of the whole child);
* ``outputs``: the bytes of the returned prediction (``X``/``layers``/``obsm`` arrays, counted once each, + ``obs``);
* ``overhead = peak − rss_before − outputs``: what ``predict`` needs on top of what it returns. Flat in N means
  streaming works. ``input embedding`` (N × cond_dim × 4 bytes) is the size of the embedding ``predict`` reads
  chunk by chunk, for scale (a whole float32 copy of it would show up as overhead of that size);
* ``ru_maxrss``: the child's lifetime peak (``resource.getrusage``), for reference.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_predict_memory.py                       # 1k, 10k, 50k spots
    PYTHONPATH=src python benchmarks/bench_predict_memory.py --sizes 1000 10000 50000 100000
    PYTHONPATH=src python benchmarks/bench_predict_memory.py --quick               # 5k and 10k spots
    PYTHONPATH=src python benchmarks/bench_predict_memory.py --out docs/benchmarks.md

``--modes memory store`` runs every N twice, side by side: as above, and with ``tl.predict(store=...)``, which
writes the prediction to a zarr folder chunk by chunk and returns a table whose arrays read lazily from it. The
table then has a ``mode`` column, ``outputs`` counts only what the prediction holds in memory (its dask arrays
hold nothing) and ``on disk`` the size of the folder::

    PYTHONPATH=src python benchmarks/bench_predict_memory.py --modes memory store --sizes 100000 1000000 \
        --n-genes 20 --cond-dim 104 --threads 1 --out docs/benchmarks.md

``--out`` replaces this benchmark's section of a markdown file (between ``<!-- bench_predict_memory -->``
markers, or ``<!-- bench_predict_store -->`` with ``--modes``; appended when absent) and leaves the rest alone.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

MARK = "bench_predict_memory"
MARK_STORE = "bench_predict_store"


# ------------------------------------------------------------------------------------------------------------
# child: one N
# ------------------------------------------------------------------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _ru_maxrss_bytes() -> int:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024  # bytes on macOS, KiB on Linux


def _nbytes(pred) -> int:
    """Bytes of the prediction AnnData: each distinct array once, plus obs."""
    import numpy as np

    seen, total = set(), 0
    arrays = [pred.X, *pred.layers.values(), *pred.obsm.values()]
    for a in arrays:
        if hasattr(a, "dask"):  # read lazily from the store: nothing in memory
            continue
        a = np.asarray(a)
        base = a if a.base is None else a.base
        if id(base) not in seen:
            seen.add(id(base))
            total += a.nbytes
    return total + int(pred.obs.memory_usage(deep=True).sum())


def child(args) -> dict:
    import anndata as ad
    import numpy as np
    import pandas as pd
    import torch

    import sthinge as st
    from sthinge.models import CellFM, Hinge, HingeConfig
    from sthinge.tl import HingeModel

    if args.threads:
        torch.set_num_threads(args.threads)
    st.settings.verbosity = 1
    n, G, C = args.n, args.n_genes, args.cond_dim
    torch.manual_seed(0)
    module = Hinge(CellFM.from_preset("tiny"), torch.arange(1, G + 1), HingeConfig(n_genes=G, cond_dim=C)).eval()
    genes = [f"gene{i}" for i in range(G)]
    model = HingeModel(module, genes=genes, embedding_key="X_emb")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((n, C), dtype=np.float32)
    xy = rng.uniform(0, 1e4, size=(n, 2))
    adata = ad.AnnData(obs=pd.DataFrame(index=pd.RangeIndex(n).astype(str)), obsm={"X_emb": emb, "spatial": xy})
    del emb, xy

    # warm-up on a few spots, so that lazy imports and one-off allocations are not charged to the first N
    st.tl.predict(
        adata[:8].copy(), model, n_steps=args.n_steps, batch_size=args.batch_size, device="cpu", inplace=False
    )

    import gc

    gc.collect()
    before = _rss_bytes()
    exact = _reset_peak()
    t0 = time.perf_counter()
    store = None
    if args.mode == "store":
        import tempfile

        store = Path(tempfile.mkdtemp(prefix="bench-store-")) / "pred.zarr"
    pred = st.tl.predict(
        adata, model, n_steps=args.n_steps, batch_size=args.batch_size, device="cpu", inplace=False, store=store
    )
    seconds = time.perf_counter() - t0
    peak = _peak_bytes() if exact else _ru_maxrss_bytes()
    outputs = _nbytes(pred)
    assert pred.shape == (n, G)
    on_disk = 0
    if store is not None:
        import shutil

        on_disk = sum(f.stat().st_size for f in store.rglob("*") if f.is_file())
        assert np.isfinite(np.asarray(pred.X[:1000])).all()
        shutil.rmtree(store.parent)
    else:
        assert np.isfinite(pred.X).all()
    return {
        "mode": args.mode,
        "on_disk": on_disk,
        "n": n,
        "seconds": seconds,
        "rss_before": before,
        "peak": peak,
        "peak_is_predict_only": exact,
        "outputs": outputs,
        "emb_copy": n * C * 4,
        "overhead": peak - before - outputs,
        "ru_maxrss": _ru_maxrss_bytes(),
    }


# ------------------------------------------------------------------------------------------------------------
# parent: one fresh process per N, table
# ------------------------------------------------------------------------------------------------------------
def _run_child(n: int, args, mode: str = "memory") -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(n),
        "--n-genes",
        str(args.n_genes),
        "--cond-dim",
        str(args.cond_dim),
        "--n-steps",
        str(args.n_steps),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--mode",
        mode,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"child for N={n} ({mode}) failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _mb(b: float) -> str:
    return f"{b / 2**20:.1f}"


def _store_table(rows: list[dict], args) -> str:
    import torch

    head = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores{', shared with other jobs' if args.shared else ''}"
        f"; Python {platform.python_version()}, torch {torch.__version__}; {datetime.date.today().isoformat()}.  \n"
        f"Tiny preset (2 x 64), random weights, G = {args.n_genes} genes, cond_dim = {args.cond_dim}, "
        f"n_steps = {args.n_steps}, 1 sample, batch_size = {args.batch_size}, AnnData input, `inplace=False`, "
        "default `levels` (mean, std and four interval bounds: six float32 arrays of N x G), "
        f"{'torch threads = ' + str(args.threads) if args.threads else 'default torch threads'}; each N and mode in "
        "a fresh process, both modes in one run. `memory`: `tl.predict` as by default; `store`: "
        "`tl.predict(store=...)`, the arrays written chunk by chunk to a zarr folder and read back lazily. MiB.\n\n"
        "| spots | mode | predict (s) | RSS before | peak in predict | peak − before | outputs in memory | on disk |\n"
        "|---:|---|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['n']:,} | {r['mode']} | {r['seconds']:.1f} | {_mb(r['rss_before'])} | "
        f"{_mb(r['peak'])}{'' if r['peak_is_predict_only'] else '*'} | {_mb(r['peak'] - r['rss_before'])} | "
        f"{_mb(r['outputs'])} | {_mb(r['on_disk']) if r['mode'] == 'store' else '–'} |"
        for r in rows
    ]
    foot = ""
    by = {(r["n"], r["mode"]): r for r in rows}
    sizes = sorted({r["n"] for r in rows})
    for n in sizes:
        if (n, "memory") in by and (n, "store") in by:
            m, s_ = by[(n, "memory")], by[(n, "store")]
            foot += (
                f"\n\n{n:,} spots: peak − before {_mb(s_['peak'] - s_['rss_before'])}"
                f" MiB with `store` against {_mb(m['peak'] - m['rss_before'])} MiB in memory (ratio "
                f"{(s_['peak'] - s_['rss_before']) / (m['peak'] - m['rss_before']):.2f}); time ratio store / memory "
                f"{s_['seconds'] / m['seconds']:.2f}."
            )
    return head + "\n".join(lines) + foot + "\n"


def _table(rows: list[dict], args) -> str:
    import torch

    head = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores{', shared with other jobs' if args.shared else ''}"
        f"; Python {platform.python_version()}, torch {torch.__version__}; {datetime.date.today().isoformat()}.  \n"
        f"Tiny preset (2 x 64), random weights, G = {args.n_genes} genes, cond_dim = {args.cond_dim}, "
        f"n_steps = {args.n_steps}, 1 sample, batch_size = {args.batch_size}, AnnData input, `inplace=False`, "
        f"{'torch threads = ' + str(args.threads) if args.threads else 'default torch threads'}. MiB.\n\n"
        "| spots | predict (s) | spots/s | RSS before | peak in predict | outputs | overhead | input embedding | "
        "ru_maxrss |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
    )
    lines = [
        f"| {r['n']:,} | {r['seconds']:.1f} | {r['n'] / r['seconds']:,.0f} | {_mb(r['rss_before'])} | "
        f"{_mb(r['peak'])}{'' if r['peak_is_predict_only'] else '*'} | {_mb(r['outputs'])} | {_mb(r['overhead'])} | "
        f"{_mb(r['emb_copy'])} | {_mb(r['ru_maxrss'])} |"
        for r in rows
    ]
    foot = ""
    if not all(r["peak_is_predict_only"] for r in rows):
        foot = "\n\n\\* `/proc/self/clear_refs` unavailable: peak of the whole child process (ru_maxrss)."
    if len(rows) >= 2:
        a, b = rows[0], rows[-1]
        slope = (b["overhead"] - a["overhead"]) / (b["n"] - a["n"])
        foot += (
            f"\n\nOverhead growth from {a['n']:,} to {b['n']:,} spots: {slope:,.0f} bytes/spot (the outputs, not "
            f"counted in it, are {8 * args.n_genes} bytes/spot for mean + std; the embedding is "
            f"{4 * args.cond_dim:,} bytes/spot)."
        )
    return head + "\n".join(lines) + foot + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 50000], help="numbers of spots")
    p.add_argument("--n-genes", type=int, default=100)
    p.add_argument("--cond-dim", type=int, default=1536, help="embedding width (1536 = UNI + CONCH)")
    p.add_argument("--n-steps", type=int, default=2, help="sampler step budget K")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=0, help="torch threads in the child (0: torch's default)")
    p.add_argument("--quick", action="store_true", help="5k and 10k spots (both above predict's 4096-spot chunk)")
    p.add_argument("--shared", action="store_true", help="say in the table that the machine was shared")
    p.add_argument("--out", help="markdown file whose section to replace / append")
    p.add_argument(
        "--modes", nargs="+", default=None, choices=["memory", "store"], help="compare tl.predict with store=..."
    )
    p.add_argument("--mode", default="memory", choices=["memory", "store"], help=argparse.SUPPRESS)
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child is not None:
        args.n = args.child
        print(json.dumps(child(args)))
        return
    sizes = [5000, 10000] if args.quick else args.sizes
    rows = []
    if args.modes:
        for n in sizes:
            for mode in args.modes:
                r = _run_child(n, args, mode)
                rows.append(r)
                print(f"N={n:>9,} {mode}: {r['seconds']:.1f} s, peak {_mb(r['peak'])} MiB", file=sys.stderr, flush=True)
        table = _store_table(rows, args)
        print(table)
        if args.out:
            write_section(args.out, MARK_STORE, "Memory of `tl.predict(store=...)` vs in memory", table)
        return
    for n in sizes:
        r = _run_child(n, args)
        rows.append(r)
        print(
            f"N={n:>7,}: {r['seconds']:.1f} s, overhead {_mb(r['overhead'])} MiB (emb copy {_mb(r['emb_copy'])} MiB)",
            file=sys.stderr,
            flush=True,
        )
    table = _table(rows, args)
    print(table)
    if args.out:
        write_section(args.out, MARK, "Memory of `tl.predict` vs number of spots", table)


if __name__ == "__main__":
    main()
