"""Speed of HINGE sampling and training on the machine at hand (issue 9). Random weights: speed does not depend on
them.

Sections (each can be skipped):

a. ``throughput``: sampling spots/s against the step budget K, the batch size, the gene panel size G and the number
   of spots, with log-log slopes of the time (1 = linear).
b. ``reference``: :func:`sthinge.models.sample` against :func:`sthinge.models.sample_reference` on the same weights
   and the same draws: max |difference| (fp32) and speed ratio.
c. ``peak``: achieved FLOP/s of the sampler (FLOPs of the model counted analytically per call, rows counted by a
   hook) against a plain ``torch.mm`` of the model's dominant shape timed in the same run, plus where the time of
   one model call goes (value encoder, condition network, blocks, decoder). Meant for ``--preset cellfm-800m``
   (40 x 1536, 200 genes; few spots, K = 2 on a CPU) and ``--preset tiny``; with ``--compile`` also the same
   sampler through ``torch.compile`` (as ``tl.predict(compile=True)``).
d. ``bf16``: ``autocast=torch.bfloat16`` against fp32: speed and max |difference|, where the CPU runs bf16.
e. ``train``: training steps/s of the masked-diffusion loss + AdamW and the share of backward.

Run from the repository root::

    PYTHONPATH=src python benchmarks/bench_sampling.py --quick                          # < 2 min, tiny model
    PYTHONPATH=src python benchmarks/bench_sampling.py                                  # tiny model, full sizes
    PYTHONPATH=src python benchmarks/bench_sampling.py --preset cellfm-800m --only peak reference bf16 \\
        --peak-spots 4 --peak-k 2 --genes-peak 200
    PYTHONPATH=src python benchmarks/bench_sampling.py --quick --out docs/benchmarks.md

``--out`` replaces this benchmark's section of a markdown file (between ``<!-- bench_sampling:<preset> -->``
markers; appended when absent).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

SECTIONS = ("throughput", "reference", "peak", "bf16", "train")


# ------------------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------------------
def build(preset: str, n_genes: int, cond_dim: int, n_layers: int | None = None, seed: int = 0):
    """A random-weight HINGE model (eval mode) on a random-weight CellFM preset."""
    from sthinge.models import CellFM, Hinge, HingeConfig

    torch.manual_seed(seed)
    overrides = {"n_layers": n_layers} if n_layers else {}
    backbone = CellFM.from_preset(preset, **overrides)
    return Hinge(backbone, torch.arange(1, n_genes + 1), HingeConfig(n_genes=n_genes, cond_dim=cond_dim)).eval()


def timeit(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall time (s) of ``fn()`` over ``repeat`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_sample(model, n_spots: int, k: int, batch_size: int, autocast=None, seed: int = 0):
    from sthinge.models import sample

    cond = torch.randn(n_spots, model.config.cond_dim, generator=torch.Generator().manual_seed(seed))
    return lambda: sample(
        model, cond, n_steps=k, batch_size=batch_size, autocast=autocast, generator=torch.Generator().manual_seed(seed)
    )


def slope(xs, ys) -> float:
    """Least-squares slope of log y against log x."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    den = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / den if den else float("nan")


def model_flops(model, rows: int) -> float:
    """FLOPs (2 x multiply-adds) of ``rows`` rows through one Hinge forward, counted from the shapes.

    Per layer and token 8 D² (q, k, v, u, o + GLU u, v, o) and the retention state 2 D d_h (KᵀV, then Q(KᵀV)),
    per layer and row the adaLN projection 6 D²; per gene token the value encoder (n_bins + n_bins² + n_bins D)
    and the decoder (D² + D); per row the condition network (time, image, mask MLPs) and the final SoftAdaLN 2 D².
    Element-wise work (norms, activations, softmax) is not counted.
    """
    bc, c = model.backbone_config, model.config
    D, N, H, G, nb = bc.d_model, bc.n_layers, bc.n_heads, c.n_genes, bc.n_bins
    L, dh = G + 1, D // H
    per_row = N * (L * (8 * D * D + 2 * D * dh) + 6 * D * D)
    per_row += G * (nb + nb * nb + nb * D) + G * (D * D + D)
    cond_in = {"sum": c.time_dim + c.cond_dim + G, "concat": c.time_dim + c.cond_dim}[c.condition]
    n_mlps = 3 if c.condition == "sum" else 1
    per_row += cond_in * D + n_mlps * D * D + 2 * D * D
    return 2.0 * per_row * rows


@contextlib.contextmanager
def count_rows(model):
    """Counts the rows of every forward call of ``model``: ``with count_rows(m) as n: ...; n[0]``."""
    n = [0]
    h = model.register_forward_pre_hook(lambda _m, args: n.__setitem__(0, n[0] + args[0].shape[0]))
    try:
        yield n
    finally:
        h.remove()


def matmul_flops_per_s(m: int, k: int, n: int, dtype=torch.float32, repeat: int = 3) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    t = timeit(lambda: torch.mm(a, b), repeat=repeat)
    return 2.0 * m * k * n / t


def component_times(model, rows: int, repeat: int = 3) -> dict[str, float]:
    """Seconds spent in the value encoder, condition network, blocks and final layer of one forward call."""
    G, C = model.n_genes, model.config.cond_dim
    x, t = torch.randn(rows, G), torch.full((rows,), model.config.n_steps)
    vis, c = (torch.rand(rows, G) < 0.5).float(), torch.randn(rows, C)
    parts = {
        "value encoder": [model.value_enc],
        "condition network": [model.cond_embed],
        "blocks": list(model.retentionblocks),
        "final layer + decoder": [model.final_layer],
    }
    acc = dict.fromkeys(parts, 0.0)
    handles, start = [], {}
    for name, mods in parts.items():
        for mod in mods:
            handles.append(mod.register_forward_pre_hook(lambda m, a: start.__setitem__(id(m), time.perf_counter())))
            handles.append(
                mod.register_forward_hook(
                    lambda m, a, o, name=name: acc.__setitem__(name, acc[name] + time.perf_counter() - start[id(m)])
                )
            )
    with torch.inference_mode():
        model(x, t, vis, vis, c)  # warm-up
        for k in acc:
            acc[k] = 0.0
        t0 = time.perf_counter()
        for _ in range(repeat):
            model(x, t, vis, vis, c)
        total = (time.perf_counter() - t0) / repeat
    for h in handles:
        h.remove()
    out = {k: v / repeat for k, v in acc.items()}
    out["other (embedding, masks, glue)"] = max(0.0, total - sum(out.values()))
    out["total"] = total
    return out


def cpu_bf16_support() -> str:
    flags = ""
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
    native = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    return (
        f"mkldnn available: {torch.backends.mkldnn.is_available()}; CPU bf16 instructions: "
        f"{', '.join(native) if native else 'none (AVX2 only: bf16 is emulated)'}"
    )


def md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" for _ in header) + "|"]
    out += ["| " + " | ".join(str(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------------------
# sections
# ------------------------------------------------------------------------------------------------------------
def bench_throughput(args) -> str:
    out = []
    from sthinge.models import auto_batch_size

    base = dict(n_spots=args.spots_base, k=args.k_base, batch_size=args.batch_base or None)
    model = build(args.preset, args.genes_base, args.cond_dim, args.n_layers)

    def sweep(name, values, make, model_for=lambda v: model):
        rows, times = [], []
        for v in values:
            kw = make(v)
            t = timeit(run_sample(model_for(v), kw["n_spots"], kw["k"], kw["batch_size"]), repeat=args.repeat)
            times.append(t)
            rows.append([f"{v:,}", f"{t:.3f}", f"{kw['n_spots'] / t:,.0f}", f"{kw['n_spots'] * kw['k'] / t:,.0f}"])
            log(f"  {name}={v}: {t:.3f} s")
        s = slope(values, times) if len(values) > 1 else float("nan")
        out.append(
            f"**vs {name}** (others: {base_desc(args, name)}); log-log slope of the time: {s:.2f}\n\n"
            + md_table([name, "time (s)", "spots/s", "spot-steps/s"], rows)
        )

    log("throughput")
    if "K" in args.sweeps:
        sweep("K", args.ks, lambda v: {**base, "k": v})
    if "batch" in args.sweeps:
        sweep("batch size", args.batch_sizes, lambda v: {**base, "batch_size": v})
        out[-1] += (
            f"\n\n`auto_batch_size` (the default of `sample` and `tl.predict`) picks "
            f"{auto_batch_size(model)} rows for this model on this device."
        )
    if "genes" in args.sweeps:
        models = {g: build(args.preset, g, args.cond_dim, args.n_layers) for g in args.genes}
        sweep("genes", args.genes, lambda v: base, model_for=lambda g: models[g])
    if "spots" in args.sweeps:
        sweep("spots", args.spots, lambda v: {**base, "n_spots": v})
    return "### a. Sampling throughput\n\n" + "\n\n".join(out)


def base_desc(args, skip: str) -> str:
    batch = f"batch size {args.batch_base}" if args.batch_base else "batch size auto"
    parts = {
        "K": f"K = {args.k_base}",
        "batch size": batch,
        "genes": f"G = {args.genes_base}",
        "spots": f"{args.spots_base:,} spots",
    }
    return ", ".join(v for k, v in parts.items() if k != skip)


def bench_reference(args, model) -> str:
    from sthinge.models import sample, sample_reference

    log("reference")
    n, k = args.ref_spots, args.ref_k
    cond = torch.randn(n, model.config.cond_dim, generator=torch.Generator().manual_seed(1))
    res = {}

    def fast():
        g = torch.Generator().manual_seed(3)
        res["fast"] = sample(model, cond, n_steps=k, batch_size=args.batch_base or None, generator=g)[0]

    def ref():
        res["ref"] = sample_reference(model, cond, n_steps=k, generator=torch.Generator().manual_seed(3))[:, 0]

    t_fast = timeit(fast, repeat=args.repeat)
    t_ref = timeit(ref, repeat=args.repeat)
    diff = (res["fast"] - res["ref"]).abs().max().item()
    return "### b. `sample` vs `sample_reference` (same weights, same draws, fp32)\n\n" + md_table(
        ["spots", "K", "G", "sample (s)", "sample_reference (s)", "speed ratio ref/sample", "max abs diff"],
        [[n, k, model.n_genes, f"{t_fast:.3f}", f"{t_ref:.3f}", f"{t_ref / t_fast:.2f}", f"{diff:.2e}"]],
    )


def bench_peak(args, model) -> str:
    log("peak")
    bc = model.backbone_config
    from sthinge.models import auto_batch_size

    n, k, bs = args.peak_spots, args.peak_k, args.batch_base or auto_batch_size(model)
    fn = run_sample(model, n, k, bs)
    with count_rows(model) as rows:
        fn()  # warm-up, counting the rows of one run
    flops = model_flops(model, rows[0])
    L = model.n_genes + 1
    m = min(max(1, min(n, bs)) * L, 8192)  # the block matmuls: (rows x L tokens, D) x (D, D)
    modes = [("eager", fn)]
    if args.compile:  # the same sampler through torch.compile (fused element-wise kernels), as predict(compile=True)
        fn_c = run_sample(torch.compile(model, dynamic=True), n, k, bs)
        t0 = time.perf_counter()
        fn_c()  # compiles
        log(f"  compiled in {time.perf_counter() - t0:.0f} s")
        modes.append(("torch.compile", fn_c))
    # Each sampler run is followed at once by the two reference matmuls, and the modes take turns, so that a
    # machine whose speed drifts (shared hosts do) changes numerator and denominator together: the fraction is
    # the median over the repeats of these paired ratios.
    res: dict[str, list[tuple[float, float, float]]] = {mode: [] for mode, _ in modes}
    for _ in range(args.repeat):
        for mode, f in modes:
            t0 = time.perf_counter()
            f()
            ts = time.perf_counter() - t0
            res[mode].append(
                (
                    ts,
                    matmul_flops_per_s(m, bc.d_model, bc.d_model, repeat=1),
                    matmul_flops_per_s(2048, 2048, 2048, repeat=1),
                )
            )
    med = statistics.median
    table_rows = []
    for mode, runs in res.items():
        tm, mm, mm_sq = med(r[0] for r in runs), med(r[1] for r in runs), med(r[2] for r in runs)
        table_rows.append(
            [
                mode,
                n,
                k,
                rows[0],
                f"{tm:.2f}",
                f"{flops / rows[0] / 1e9:.3f}",
                f"{flops / tm / 1e9:.1f}",
                f"{mm / 1e9:.1f}",
                f"{med(flops / r[0] / r[1] for r in runs):.2f}",
                f"{mm_sq / 1e9:.1f}",
                f"{med(flops / r[0] / r[2] for r in runs):.2f}",
            ]
        )
    per_call = flops / max(rows[0], 1)
    comp = component_times(model, rows=max(1, min(n, bs)), repeat=args.repeat)
    total = comp.pop("total")
    comp_rows = [[name, f"{s * 1e3:.1f}", f"{100 * s / total:.0f} %"] for name, s in comp.items()]
    comp_rows.append(["total", f"{total * 1e3:.1f}", "100 %"])
    vocab_flops = 2.0 * (bc.n_bins + bc.n_bins**2 + bc.n_bins * bc.d_model) * model.n_genes
    return (
        f"### c. Fraction of the measured matmul peak ({bc.name}: {bc.n_layers} x {bc.d_model}, "
        f"G = {model.n_genes})\n\n"
        + md_table(
            [
                "model",
                "spots",
                "K",
                "model rows",
                "time (s)",
                "GFLOP / row",
                "sampler GFLOP/s",
                f"mm ({m}x{bc.d_model})·({bc.d_model}x{bc.d_model}) GFLOP/s",
                "fraction",
                "mm 2048³ GFLOP/s",
                "fraction",
            ],
            table_rows,
        )
        + f"\n\nMedians over {args.repeat} paired run(s); each fraction is the median of the ratios of a sampler run "
        "to the reference matmuls timed right after it.\n\n"
        f"Value encoder share of the counted FLOPs: {100 * vocab_flops / per_call:.1f} %. "
        f"Time of one forward call of {max(1, min(n, bs))} rows by part:\n\n"
        + md_table(["part", "ms", "share"], comp_rows)
    )


def bench_bf16(args, model) -> str:
    log("bf16")
    n, k, bs = args.bf16_spots, args.bf16_k, args.batch_base or None
    support = cpu_bf16_support()
    res = {}

    def go(dtype):
        def f():
            res[dtype] = run_sample(model, n, k, bs, autocast=dtype)()[0]

        return f

    t32 = timeit(go(None), repeat=args.repeat)
    try:
        t16 = timeit(go(torch.bfloat16), repeat=args.repeat)
    except (RuntimeError, NotImplementedError) as err:
        return f"### d. bf16 autocast\n\n{support}. bf16 autocast failed: {err}"
    diff = (res[None] - res[torch.bfloat16].float()).abs().max().item()
    scale = res[None].abs().max().item()
    return f"### d. bf16 autocast vs fp32\n\n{support}.\n\n" + md_table(
        ["spots", "K", "fp32 (s)", "bf16 autocast (s)", "speed-up", "max abs diff", "max |fp32|"],
        [[n, k, f"{t32:.3f}", f"{t16:.3f}", f"{t32 / t16:.2f}", f"{diff:.3g}", f"{scale:.3g}"]],
    )


def bench_train(args) -> str:
    from sthinge.models import MaskSchedule, training_loss

    log("train")
    model = build(args.train_preset, args.genes_base, args.cond_dim).train()
    schedule = MaskSchedule.from_config(model.config)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    B = args.train_batch
    g = torch.Generator().manual_seed(0)
    x0, cond = torch.randn(B, model.n_genes, generator=g).abs(), torch.randn(B, model.config.cond_dim, generator=g)
    acc = {"forward + loss": 0.0, "backward": 0.0, "optimizer": 0.0}

    def step(record: bool):
        t0 = time.perf_counter()
        loss = training_loss(model, x0, cond, schedule)
        t1 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if record:
            for name, dt in zip(acc, (t1 - t0, t2 - t1, t3 - t2)):
                acc[name] += dt

    for _ in range(2):
        step(False)
    for _ in range(args.train_steps):
        step(True)
    total = sum(acc.values())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"### e. Training ({args.train_preset}, G = {model.n_genes}, cond_dim = {model.config.cond_dim}, "
        f"batch {B}, {n_train:,} trainable parameters, {args.train_steps} steps)\n\n"
        + md_table(
            ["steps/s", "spots/s", "forward + loss", "backward", "optimizer"],
            [
                [f"{args.train_steps / total:.2f}", f"{args.train_steps * B / total:,.0f}"]
                + [f"{100 * v / total:.0f} %" for v in acc.values()]
            ],
        )
    )


# ------------------------------------------------------------------------------------------------------------
def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="tiny", help="CellFM preset of the sampled model (tiny, cellfm-800m, ...)")
    p.add_argument("--n-layers", type=int, help="override the preset's depth (per-layer cost is unchanged)")
    p.add_argument("--cond-dim", type=int, default=1536)
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    p.add_argument("--quick", action="store_true", help="small sizes: the whole run in < 2 minutes on 2 cores")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per point (median)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    sweeps = ["K", "batch", "genes", "spots"]
    p.add_argument("--sweeps", nargs="+", choices=sweeps, default=sweeps, help="throughput: which sweeps to run")
    p.add_argument("--ks", type=int, nargs="+", default=[50, 10, 5])
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512])
    p.add_argument("--genes", type=int, nargs="+", default=[50, 100, 200, 300])
    p.add_argument("--spots", type=int, nargs="+", default=[1000, 3000, 10000])
    p.add_argument("--spots-base", type=int, default=1000)
    p.add_argument("--k-base", type=int, default=5)
    p.add_argument("--batch-base", type=int, default=0, help="rows per model call (0: auto_batch_size)")
    p.add_argument("--genes-base", type=int, default=200)
    p.add_argument("--ref-spots", type=int, default=256)
    p.add_argument("--ref-k", type=int, default=10)
    p.add_argument("--peak-spots", type=int, default=256)
    p.add_argument("--peak-k", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="peak: also time the sampler through torch.compile")
    p.add_argument("--bf16-spots", type=int, default=256)
    p.add_argument("--bf16-k", type=int, default=5)
    p.add_argument("--train-preset", default="tiny")
    p.add_argument("--train-batch", type=int, default=32)
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--shared", action="store_true", help="say in the output that the machine was shared")
    p.add_argument("--out", help="markdown file whose section to replace / append")
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.batch_sizes, args.genes, args.spots = [10, 5, 2], [32, 128], [50, 100, 200], [64, 128, 256]
        args.spots_base, args.k_base, args.genes_base, args.repeat = 64, 2, 100, 1
        args.ref_spots, args.ref_k, args.peak_spots, args.peak_k = 32, 5, 32, 2
        args.bf16_spots, args.bf16_k, args.train_steps = 32, 2, 5
    if args.preset != "tiny" and "throughput" in args.only and not args.quick:
        log("note: the throughput sweep builds several models of this preset; consider --only peak reference bf16")
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.perf_counter()
    parts = []
    need_model = {"reference", "peak", "bf16"} & set(args.only)
    model = None
    if need_model:
        log(f"building {args.preset} (G = {args.genes_base})")
        t0 = time.perf_counter()
        model = build(args.preset, args.genes_base, args.cond_dim, args.n_layers)
        log(f"  built in {time.perf_counter() - t0:.1f} s")
    if "throughput" in args.only:
        parts.append(bench_throughput(args))
    if "reference" in args.only:
        parts.append(bench_reference(args, model))
    if "peak" in args.only:
        parts.append(bench_peak(args, model))
    if "bf16" in args.only:
        parts.append(bench_bf16(args, model))
    if "train" in args.only:
        parts.append(bench_train(args))
    layers = f", {args.n_layers} layers" if args.n_layers else ""
    head = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores"
        f"{', shared with other jobs (noisy)' if args.shared else ''}"
        f", {torch.get_num_threads()} torch threads; Python {platform.python_version()}, torch {torch.__version__}; "
        f"{datetime.date.today().isoformat()}. Preset `{args.preset}`{layers}, random weights, cond_dim = "
        f"{args.cond_dim}, fp32 unless stated, {'--quick, ' if args.quick else ''}median of {args.repeat} run(s); "
        f"whole run {time.perf_counter() - t_start:.0f} s.\n\n"
    )
    text = head + "\n\n".join(parts) + "\n"
    print(text)
    if args.out:
        tag = args.preset + ("-quick" if args.quick else "")
        write_section(
            args.out,
            f"bench_sampling:{tag}",
            f"Sampling and training speed: `{args.preset}`{' (quick)' if args.quick else ''}",
            text,
        )


if __name__ == "__main__":
    main()
