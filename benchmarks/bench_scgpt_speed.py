"""Sampling speed of HINGE on scGPT against HINGE on CellFM, side by side in one run, at equal panel and step budget.

Random-weight models (speed does not depend on the weights): for each pair of widths in ``--pairs`` (``tiny``:
the tiny presets of both backbones; ``80m`` and ``800m``: sthinge's CellFM-80M and CellFM-800M presets against scGPT
whole-human (12 x 512)),
``HingeScGPT`` and ``Hinge`` sample ``--spots`` spots of ``--genes`` genes with ``--k`` sampler steps and one sample
each, in the same process, alternating (``--repeats`` times each, the median kept), on the CPU in float32. Reported:
spots/s of each and the ratio scGPT / CellFM. The paper's Table S5 gives 548 against 26 spots/s at K = 5 on its GPU
(about 21x).

    PYTHONPATH=src python benchmarks/bench_scgpt_speed.py --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import write_section  # noqa: E402

MARK = "bench_scgpt_speed"
PAIRS = {
    "tiny": ("tiny", "tiny"),
    "80m": ("cellfm-80m", "whole-human"),
    "800m": ("cellfm-800m", "whole-human"),
}


def _models(pair: str, genes: int, cond_dim: int):
    from sthinge.models import CellFM, CellFMConfig, Hinge, HingeConfig, HingeScGPT, ScGPT

    cellfm_preset, scgpt_preset = PAIRS[pair]
    cfg = HingeConfig(n_genes=genes, cond_dim=cond_dim)
    torch.manual_seed(0)
    cellfm = CellFM(CellFMConfig.from_preset(cellfm_preset, st_tokens=False)) if cellfm_preset != "tiny" else None
    cellfm = cellfm or CellFM.from_preset("tiny")
    hinge = Hinge(cellfm, torch.arange(1, genes + 1), cfg).eval()
    extra = {"vocab_size": genes + 10} if scgpt_preset == "tiny" else {}  # the tiny vocabulary holds 100 tokens
    scgpt = ScGPT.from_preset(scgpt_preset, **extra).eval()
    hinge_scgpt = HingeScGPT(scgpt, torch.arange(3, genes + 3), cfg, cls_token_id=1).eval()
    shapes = {
        "cellfm": f"{cellfm.config.n_layers} x {cellfm.config.d_model}",
        "scgpt": f"{scgpt.config.n_layers} x {scgpt.config.d_model}",
    }
    return {"cellfm": hinge, "scgpt": hinge_scgpt}, shapes


def _time(model, cond, k: int) -> float:
    from sthinge.models import sample

    t0 = time.perf_counter()
    with torch.inference_mode():
        sample(model, cond, n_steps=k, n_samples=1, generator=torch.Generator().manual_seed(0))
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--genes", type=int, default=200)
    p.add_argument("--spots", type=int, default=8)
    p.add_argument("--k", type=int, default=5, help="sampler step budget K")
    p.add_argument("--cond-dim", type=int, default=104)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--shared", action="store_true")
    p.add_argument("--out")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for pair in args.pairs:
        models, shapes = _models(pair, args.genes, args.cond_dim)
        cond = torch.randn(args.spots, args.cond_dim)
        for m in models.values():  # warm-up
            _time(m, cond[:1], 1)
        times = {name: [] for name in models}
        for _ in range(args.repeats):
            for name, m in models.items():
                times[name].append(_time(m, cond, args.k))
        med = {name: statistics.median(v) for name, v in times.items()}
        rows.append((pair, shapes, {name: args.spots / s for name, s in med.items()}))
        print(pair, {k: f"{v:.2f}" for k, v in rows[-1][2].items()}, file=sys.stderr, flush=True)
    head = (
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores{', shared with other jobs' if args.shared else ''}"
        f", no GPU; Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; {datetime.date.today().isoformat()}. Written by "
        "`benchmarks/bench_scgpt_speed.py`.  \n"
        f"Random weights, float32 on the CPU, G = {args.genes} genes, K = {args.k} steps, 1 sample, "
        f"{args.spots} spots per call, median of {args.repeats} alternating runs.\n\n"
        "| widths | HINGE-CellFM (layers x width) | spots/s | HINGE-scGPT (layers x width) | spots/s | "
        "scGPT / CellFM |\n|---|---|---:|---|---:|---:|\n"
    )
    lines = [
        f"| {pair} | {shapes['cellfm']} | {s['cellfm']:.2f} | {shapes['scgpt']} | {s['scgpt']:.2f} | "
        f"{s['scgpt'] / s['cellfm']:.1f}x |"
        for pair, shapes, s in rows
    ]
    table = head + "\n".join(lines) + "\n"
    print(table)
    if args.out:
        write_section(args.out, MARK, "Sampling speed: HINGE on scGPT vs HINGE on CellFM", table)


if __name__ == "__main__":
    main()
