"""Fit and predict cost of ``tl.fit``'s defaults against the earlier ones, measured side by side in one process.

The defaults changed on 2026-12-04 (the oracle diagnostic, ``bench_steer.py``): ``modulation="hidden"`` and a
learning rate scaled with the backbone's width. The earlier defaults are ``config={"modulation": "paper"}`` and
``lr=1e-4``. This script trains both on the same data, alternating (old, new, old, new, ...), for a fixed number of
epochs (no early stopping), then predicts the same held-out section with each, also alternating, and reports the
time per epoch and per prediction and their ratios. The learning rate does not change the cost of a step; the
ratio is the cost of the hidden-unit scales. Her2ST patient C with ``he-stats`` embeddings, trained on C3–C6,
predicted on C2, on the default backbone.

Examples
--------
    export STHINGE_DATA_DIR=/path/to/data  # the folder holding her2st/
    PYTHONPATH=src python benchmarks/bench_default_cost.py --out docs/benchmarks.md
    PYTHONPATH=src python benchmarks/bench_default_cost.py --epochs 1 --repeats 1 --n-steps 2   # smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_her2st_loso import _prepared  # noqa: E402

MARK = "bench_default_cost"
TITLE = "Fit and predict cost: tl.fit's defaults of 2026-12-04 against the earlier ones"
DESIGNS = {
    "earlier defaults": {"config": {"modulation": "paper"}, "lr": 1e-4},
    "defaults since 2026-12-04": {},
}


def run(table, backbone: Path, args) -> dict[str, dict[str, list[float]]]:
    """``{design: {"epoch": [s per epoch per fit], "predict": [s per prediction]}}``, measured alternating."""
    import sthinge as st
    from sthinge import _constants as K

    emb = K.embedding_key("he-stats")
    train = table[table.obs[K.SECTION_KEY].isin(["C3", "C4", "C5", "C6"])].copy()
    st.pp.select_genes(train, n_top=300, vocab="cellfm-80m")
    held = table[table.obs[K.SECTION_KEY] == "C2"].copy()
    times: dict[str, dict[str, list[float]]] = {d: {"epoch": [], "predict": []} for d in DESIGNS}
    models = {}
    # untimed warm-up (first-call costs: imports, allocator, thread pools)
    st.tl.fit(train, backbone=str(backbone), embedding_key=emb, max_epochs=1, min_epochs=1, calibrate=False)
    for _ in range(args.repeats):
        for design, kw in DESIGNS.items():
            start = time.perf_counter()
            models[design] = st.tl.fit(
                train,
                backbone=str(backbone),
                embedding_key=emb,
                max_epochs=args.epochs,
                min_epochs=args.epochs,
                calibrate=False,
                seed=args.seed,
                **kw,
            )
            times[design]["epoch"].append((time.perf_counter() - start) / args.epochs)
    for _ in range(args.repeats):
        for design, model in models.items():
            start = time.perf_counter()
            st.tl.predict(held, model, n_steps=args.n_steps, n_samples=args.n_samples, seed=args.seed, inplace=False)
            times[design]["predict"].append(time.perf_counter() - start)
    times["_meta"] = {  # type: ignore[assignment]
        "n_genes": len(train.uns[K.GENES_KEY]["genes"]),
        "n_train": train.n_obs,
        "n_held": held.n_obs,
        "trainable": {d: sum(p.numel() for p in m.module.trainable_parameters()) for d, m in models.items()},
    }
    return times


def report(times: dict, args, backbone: Path) -> str:
    meta = times.pop("_meta")
    old, new = list(DESIGNS)
    med = {d: {k: float(np.median(v)) for k, v in t.items()} for d, t in times.items()}
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, {args.threads} torch thread(s); "
        f"{time.strftime('%Y-%m-%d')}; written by `benchmarks/bench_default_cost.py`. Backbone `{backbone.name}`; "
        f"trained on C3–C6 ({meta['n_train']} spots, {meta['n_genes']} genes, `he-stats`) for {args.epochs} "
        f"epochs without early stopping and predicted on C2 ({meta['n_held']} spots, K = {args.n_steps}, "
        f"{args.n_samples} samples); the two designs alternate, {args.repeats} times each; medians.",
        "",
        "| design | trainable parameters | fit (s per epoch) | predict (s) |",
        "|---|---:|---:|---:|",
    ]
    for d in DESIGNS:
        lines.append(f"| {d} | {meta['trainable'][d]:,} | {med[d]['epoch']:.2f} | {med[d]['predict']:.2f} |")
    lines += [
        "",
        f"Ratios (new / earlier): fit {med[new]['epoch'] / med[old]['epoch']:.2f}x per epoch, predict "
        f"{med[new]['predict'] / med[old]['predict']:.2f}x. Every time: fit "
        + ", ".join(f"{d} {[round(x, 2) for x in times[d]['epoch']]}" for d in DESIGNS)
        + "; predict "
        + ", ".join(f"{d} {[round(x, 2) for x in times[d]['predict']]}" for d in DESIGNS)
        + ".",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--n-steps", type=int, default=10)
    p.add_argument("--n-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--backbone", type=Path, default=None, help="backbone checkpoint (default: default_backbone())")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write the report section into")
    args = p.parse_args(argv)
    import torch

    import sthinge as st
    from sthinge.tl._backbone import default_backbone

    torch.set_num_threads(args.threads)
    st.settings.verbosity = 1
    cache = Path(st.settings.cachedir) / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    data_dir = os.environ.get("STHINGE_DATA_DIR")
    table = _prepared(cache, Path(data_dir) / "her2st" if data_dir else None)
    backbone = args.backbone if args.backbone is not None else default_backbone()
    text = report(run(table, Path(backbone), args), args, Path(backbone))
    if args.out:
        from _report import write_section

        write_section(args.out, MARK, TITLE, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
