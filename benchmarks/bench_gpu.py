"""Sampling speed, peak memory and MFU of HINGE on one accelerator (issue 9's GPU targets).

A random-weight HINGE on a CellFM preset (default ``cellfm-800m``: 40 x 1536) with ``--genes`` genes samples
``--spots`` spots with each step budget in ``--ks`` (T = 50 is the full sampler), under bf16 autocast by default,
optionally through ``torch.compile`` (``--compile``; falls back to eager if compiling fails). For each K it
reports spots/s, the peak memory allocated by torch, the FLOPs of the model calls (counted from the shapes by
``bench_sampling.model_flops``, rows counted by a hook) and the MFU: achieved FLOP/s over the card's dense peak
for the dtype (``--peak-tflops``; by default looked up from the device name, e.g. H100 SXM bf16 989 TFLOP/s).

On a CPU (``--device cpu``, fp32 by default; e.g. ``--preset tiny`` as a smoke test) the peak is a 2048³
``torch.mm`` timed in the same run (``bench_sampling.py --only peak`` is the careful CPU measurement).

Examples
--------
    PYTHONPATH=src python benchmarks/bench_gpu.py                                  # cellfm-800m, 200 genes, cuda
    PYTHONPATH=src python benchmarks/bench_gpu.py --compile --out docs/benchmarks.md
    PYTHONPATH=src python benchmarks/bench_gpu.py --device cpu --preset tiny --spots 64 --ks 5  # smoke test
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402
from bench_sampling import build, count_rows, matmul_flops_per_s, model_flops  # noqa: E402

# dense (no sparsity) peak TFLOP/s by device-name fragment and dtype, from the vendors' data sheets
PEAKS = {
    "H100 PCIe": {"bf16": 756.0, "fp32": 51.0},
    "H100": {"bf16": 989.4, "fp32": 66.9},  # SXM5
    "H200": {"bf16": 989.4, "fp32": 66.9},
    "A100": {"bf16": 312.0, "fp32": 19.5},
    "L40S": {"bf16": 362.0, "fp32": 91.6},
}


def card_peak(name: str, dtype: str) -> float | None:
    for key, value in PEAKS.items():  # the more specific names come first
        if key in name:
            return value[dtype] * 1e12
    return None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="cellfm-800m")
    p.add_argument("--n-layers", type=int, default=None)
    p.add_argument("--genes", type=int, default=200)
    p.add_argument("--cond-dim", type=int, default=1536)
    p.add_argument("--spots", type=int, default=512)
    p.add_argument("--ks", type=int, nargs="+", default=[50, 5])
    p.add_argument("--batch-size", type=int, default=256, help="rows (spots x samples) per model call")
    p.add_argument("--dtype", choices=["bf16", "fp32"], default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (eager if it fails)")
    p.add_argument("--peak-tflops", type=float, default=None, help="the card's dense peak for --dtype")
    p.add_argument("--out", default=None, help="markdown file whose bench_gpu section to replace / append")
    args = p.parse_args(argv)

    from sthinge.models import sample

    device = torch.device(args.device)
    args.dtype = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    model = build(args.preset, args.genes, args.cond_dim, n_layers=args.n_layers).to(device)
    runner = model
    compiled = "no"
    if args.compile:
        try:
            runner = torch.compile(model)
            with torch.inference_mode():
                sample(
                    runner,
                    torch.randn(2, args.cond_dim),
                    n_steps=1,
                    batch_size=2,
                    autocast=torch.bfloat16 if args.dtype == "bf16" else None,
                )
            compiled = "yes"
        except Exception as err:  # noqa: BLE001 - any compiler failure falls back to eager
            print(f"torch.compile failed ({type(err).__name__}: {err}); eager instead", file=sys.stderr)
            runner, compiled = model, "failed, eager"
    autocast = torch.bfloat16 if args.dtype == "bf16" else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "CPU"
    if args.peak_tflops:
        peak, peak_src = args.peak_tflops * 1e12, "given"
    elif device.type == "cuda":
        peak = card_peak(name, args.dtype)
        peak_src = "data sheet" if peak else "unknown"
    else:
        peak, peak_src = matmul_flops_per_s(2048, 2048, 2048), "fp32 torch.mm 2048³ timed here"
    cond = torch.randn(args.spots, args.cond_dim, generator=torch.Generator().manual_seed(0))
    rows_out = []
    for k in args.ks:
        with torch.inference_mode():  # warm-up on a few spots (kernels, allocator, autotuning)
            sample(
                runner,
                cond[:8],
                n_steps=k,
                batch_size=args.batch_size,
                autocast=autocast,
                generator=torch.Generator().manual_seed(1),
            )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync(device)
        with count_rows(model) as n_rows:
            t0 = time.perf_counter()
            sample(
                runner,
                cond,
                n_steps=k,
                batch_size=args.batch_size,
                autocast=autocast,
                generator=torch.Generator().manual_seed(0),
            )
            sync(device)
            seconds = time.perf_counter() - t0
        flops = model_flops(model, n_rows[0])
        mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
        mfu = flops / seconds / peak if peak else float("nan")
        rows_out.append((k, seconds, args.spots / seconds, flops / seconds / 1e12, mfu, mem))
        print(
            f"K={k}: {args.spots / seconds:.1f} spots/s, {flops / seconds / 1e12:.3f} TFLOP/s, MFU {mfu:.1%}, "
            f"peak memory {mem:.2f} GiB",
            flush=True,
        )

    bc = model.backbone_config
    head = (
        f"Device: {name}; torch {torch.__version__}; {datetime.date.today()}. Preset `{args.preset}` "
        f"({bc.n_layers} x {bc.d_model}), random weights, G = {args.genes}, cond_dim = {args.cond_dim}, "
        f"{args.spots} spots, 1 sample, batch {args.batch_size} rows, {args.dtype}"
        f"{' autocast' if args.dtype == 'bf16' else ''}, torch.compile: {compiled}. Peak used: "
        f"{peak / 1e12 if peak else float('nan'):.3f} TFLOP/s ({peak_src})."
    )
    table = ["| K | time (s) | spots/s | TFLOP/s | MFU | peak memory (GiB) |", "|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {k} | {s:.2f} | {sps:.1f} | {tf:.3f} | {m:.1%} | {mem:.2f} |" for k, s, sps, tf, m, mem in rows_out]
    body = head + "\n\n" + "\n".join(table) + "\n"
    print(body)
    if args.out:
        write_section(args.out, f"bench_gpu:{device.type}-{args.preset}", f"Sampling on {name}: `{args.preset}`", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
