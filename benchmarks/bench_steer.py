"""The oracle diagnostic: can a backbone + conditioning design carry a condition at all?

HINGE steers a frozen expression backbone with an image embedding. Whether a design *can* be steered is a
separate question from whether the histology features are good: here the image embedding is replaced by an
**oracle**, ``oracleK``, the PCA-K scores of the true normalised expression of all genes of the table (the
``pp.normalize`` layer; centre and components fitted on the training spots only, applied to every spot). An
oracle holds the answer, so a design that carries a condition turns it into a high PCC-50 on the held-out section;
one that cannot stays near its ``he-stats`` result (the real embedding, run beside it as the reference).

Protocol: Her2ST patient C, hold out C2, train on C3–C6 (``tl.cross_validate`` with ``folds=["C2"]``: the panel is
chosen on the training sections), ``tl.fit``'s defaults otherwise with ``--max-epochs`` 30 (``min_epochs`` 15),
predicted with K = 10 steps and 4 averaged samples, seed 0, and ``tl.fit``'s learning rate unless ``--lr`` says
otherwise. Methods: ``ridge`` on the same condition, and HINGE variants on ``--backbone`` (default:
``default_backbone()``, the cached offline stand-in): the paper's design (``modulation="paper"``) as ``scratch``,
``hinge`` (frozen), ``hinge-exact``, ``lora``, ``lora32``, ``decoder-tune``, ``finetune``; ``tl.fit``'s default
design (``modulation="hidden"``) as ``hidden`` (frozen) and ``scratch-hidden``. Each method is compared with the
Scratch of its own modulation. Every record names the backbone file and its architecture (layers x width) and
the learning rate, so one runs file compares backbones and settings.

As in ``bench_her2st_loso.py``, each finished run (one backbone, method and condition) is appended as one JSON line
to ``--runs`` and skipped when present, so the diagnostic can be split over processes and resumed; ``--report``
writes the table into ``--out`` between ``<!-- bench_steer:start -->`` / ``<!-- bench_steer:end -->``.

Examples
--------
    export STHINGE_DATA_DIR=/path/to/data  # the folder holding her2st/
    PYTHONPATH=src python benchmarks/bench_steer.py --runs steer_a.jsonl                   # all methods, conditions
    PYTHONPATH=src python benchmarks/bench_steer.py --methods ridge hinge --conditions oracle20 --runs steer_b.jsonl
    PYTHONPATH=src python benchmarks/bench_steer.py --methods hinge --backbone <scgpt folder> --runs steer_c.jsonl
    PYTHONPATH=src python benchmarks/bench_steer.py --methods ridge hinge --conditions oracle5 --max-epochs 1 \\
        --n-steps 2 --n-samples 1 --runs /tmp/steer_smoke.jsonl                               # smoke run, minutes
    PYTHONPATH=src python benchmarks/bench_steer.py --report --runs steer_*.jsonl --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_her2st_loso import SECTIONS, _append, _prepared  # noqa: E402

FOLD = "C2"
TRAIN = [s for s in SECTIONS if s != FOLD]
# name -> (HingeConfig fields of tl.fit's `config`, or None for ridge; description). The paper's design is named
# explicitly (`modulation="paper"`), since tl.fit's default is `"hidden"` since 2026-12-04.
PAPER = {"modulation": "paper"}
METHODS: dict[str, tuple[dict | None, str]] = {
    "ridge": (None, "ridge regression on the condition (alpha by inner CV, no backbone)"),
    "scratch": ({"variant": "scratch", **PAPER}, "the paper's architecture, every weight random and trained"),
    "hinge": (dict(PAPER), "frozen backbone + SoftAdaLN (the paper's design, official init)"),
    "hinge-exact": ({"init": "exact-identity", **PAPER}, "`hinge` with the exact-identity SoftAdaLN initialisation"),
    "lora": (
        {"variant": "backbone-lora", "lora_rank": 8, **PAPER},
        "`hinge` + LoRA adapters in the backbone (rank 8)",
    ),
    "lora32": (
        {"variant": "backbone-lora", "lora_rank": 32, "lora_alpha": 32.0, **PAPER},
        "`hinge` + LoRA adapters in the backbone (rank 32, alpha 32)",
    ),
    "decoder-tune": ({"variant": "decoder-tune", **PAPER}, "`hinge` + the backbone's value decoder trained"),
    "finetune": (
        {"variant": "finetune", **PAPER},
        "the pre-trained backbone kept and trained with SoftAdaLN (not frozen)",
    ),
    "hidden": (
        {"modulation": "hidden"},
        "frozen backbone + SoftAdaLN + the condition scaling the hidden units of every feed-forward and of the "
        "decoder (`modulation='hidden'`, tl.fit's default)",
    ),
    "scratch-hidden": (
        {"variant": "scratch", "modulation": "hidden"},
        "the `hidden` architecture, every weight random and trained",
    ),
}
DEFAULT_METHODS = ["ridge", "scratch", "hinge", "scratch-hidden", "hidden"]


def _scratch_of(base: str) -> str:
    """The Scratch row a method is compared with: the same modulation, every weight trained."""
    config = METHODS[base][0] or {}
    return "scratch-hidden" if config.get("modulation") == "hidden" else "scratch"


CONDITIONS = ["oracle5", "oracle20", "oracle50", "he-stats"]
RATIO_CONDITION = "oracle20"
MARK = "bench_steer"
TITLE = "The oracle diagnostic: can the frozen backbone carry a condition?"


# ---- conditions -----------------------------------------------------------------------------------------------
def _condition(name: str) -> str:
    """argparse type of ``--conditions``: ``he-stats`` or ``oracle<K>`` with K >= 1."""
    m = re.fullmatch(r"oracle(\d+)", name)
    if name != "he-stats" and (m is None or int(m.group(1)) < 1):
        raise argparse.ArgumentTypeError(f"a condition is 'he-stats' or 'oracle<K>' (K >= 1), got {name!r}")
    return name


def _condition_order(name: str) -> tuple[int, int]:
    m = re.fullmatch(r"oracle(\d+)", name)
    return (0, int(m.group(1))) if m else (1, 0)


def _oracle(table, k: int, train: np.ndarray) -> np.ndarray:
    """PCA-K scores of the normalised expression of all genes; centre and components from the ``train`` rows."""
    from scipy import sparse
    from sklearn.decomposition import PCA

    from sthinge import _constants as K

    x = table.layers[K.NORM_LAYER]
    x = x.toarray() if sparse.issparse(x) else np.asarray(x)
    pca = PCA(n_components=k, svd_solver="full").fit(x[train])
    return pca.transform(x).astype(np.float32)


def _conditioned(table, condition: str):
    """``(table, embedding key)``: the table itself for ``he-stats``, a copy with ``obsm["X_oracleK"]`` else."""
    from sthinge import _constants as K

    if condition == "he-stats":
        return table, K.embedding_key("he-stats")
    key = f"X_{condition}"
    work = table.copy()
    train = work.obs[K.SECTION_KEY].astype(str).isin(TRAIN).to_numpy()
    work.obsm[key] = _oracle(work, int(condition.removeprefix("oracle")), train)
    return work, key


# ---- runs ----------------------------------------------------------------------------------------------------
def _backbone_info(path: Path) -> dict:
    """File name, family and architecture (layers x width) of a backbone checkpoint (file or scGPT folder)."""
    from sthinge.io import load_cellfm, load_scgpt

    path = Path(path)
    kind, net = ("scgpt", load_scgpt(path)[0]) if path.is_dir() else ("cellfm", load_cellfm(path))
    c = net.config
    return {"backbone": path.name, "backbone_kind": kind, "arch": f"{c.n_layers} x {c.d_model}"}


def _records(files: list[Path]) -> list[dict]:
    lines = [x for f in files if f.exists() for x in f.read_text().splitlines() if x.strip()]
    return [r for r in map(json.loads, lines) if r.get("kind") == "steer"]


def _key(record: dict) -> tuple[str, str, str, str]:
    return (record["backbone"] or "", record["method"], record["condition"], record["fold"])


def _cross_validate(table, key: str, method: str, args, backbone: Path):
    import sthinge as st

    config = METHODS[method][0]
    kw = dict(folds=[FOLD], sections=SECTIONS, embedding_key=key, seed=args.seed)
    if config is None:
        return st.tl.cross_validate(table, method=method, **kw)
    fit = dict(backbone=str(backbone), max_epochs=args.max_epochs, min_epochs=min(15, args.max_epochs))
    if args.lr is not None:
        fit["lr"] = args.lr
    predict = dict(n_steps=args.n_steps, n_samples=args.n_samples)
    return st.tl.cross_validate(
        table, method="hinge", fit_kwargs={**fit, "config": dict(config)}, predict_kwargs=predict, **kw
    )


def _record(res, method: str, condition: str, args, info: dict, dim: int, wall: float) -> dict:
    hinge = METHODS[method][0] is not None
    row, per_gene = res.iloc[0], res.attrs["details"].per_gene
    return {
        "kind": "steer",
        "method": method + args.suffix,
        "base": method,
        "condition": condition,
        "embedding_dim": dim,
        "fold": FOLD,
        "train": TRAIN,
        **(info if hinge else {"backbone": None, "backbone_kind": None, "arch": None}),
        "config": METHODS[method][0],
        "seed": args.seed,
        "max_epochs": args.max_epochs if hinge else None,
        "min_epochs": min(15, args.max_epochs) if hinge else None,
        "lr": (args.lr if args.lr is not None else 1e-4) if hinge else None,
        "n_steps": args.n_steps if hinge else None,
        "n_samples": args.n_samples if hinge else None,
        "metrics": {m: float(row[m]) for m in ("pcc50", "pcc", "mse", "mae", "ssim")},
        "n_panel": int(row["n_panel"]),
        "fit_seconds": float(row["fit_seconds"]),
        "predict_seconds": float(row["predict_seconds"]),
        "wall_seconds": wall,
        "history": res.attrs["details"].histories.get(FOLD, []),
        "per_gene_pcc": {
            str(g): (float(p) if np.isfinite(p) else None) for g, p in zip(per_gene["gene"], per_gene["pcc"])
        },
        "machine": f"{platform.machine()} ({platform.system()}), {os.cpu_count()} CPU cores",
        "date": time.strftime("%Y-%m-%d"),
    }


def run(args, table, backbone: Path, runs: Path) -> int:
    """Every (condition, method) not in ``--runs`` yet; returns the number of runs that failed."""
    info = _backbone_info(backbone)
    done = {_key(r) for r in _records(args.all_runs)}
    failed = 0
    for condition in args.conditions:
        work, key = None, None
        for method in args.methods:
            bb = info["backbone"] if METHODS[method][0] is not None else ""
            if (bb, method + args.suffix, condition, FOLD) in done:
                print(f"skip {method}{args.suffix} {condition} ({bb or 'no backbone'}): already in {runs}", flush=True)
                continue
            if work is None:
                work, key = _conditioned(table, condition)
            start = time.perf_counter()
            try:
                res = _cross_validate(work, key, method, args, backbone)
            except ValueError as err:  # e.g. a variant the backbone's family does not support
                print(f"FAILED {method} {condition} ({bb}): {err}", file=sys.stderr, flush=True)
                failed += 1
                continue
            record = _record(res, method, condition, args, info, work.obsm[key].shape[1], time.perf_counter() - start)
            _append(runs, record)
            print(
                f"{record['method']:>13} {condition:>9} {bb or '-':>30}: PCC-50 {record['metrics']['pcc50']:.3f} "
                f"({record['wall_seconds']:.0f} s)",
                flush=True,
            )
    return failed


# ---- report --------------------------------------------------------------------------------------------------
def _rows(records: list[dict]) -> dict[tuple[str, str], dict[str, dict]]:
    """``{(backbone, method): {condition: record}}``, ridge (no backbone) first, then by backbone and method."""
    by: dict[tuple[str, str], dict[str, dict]] = {}
    for r in records:
        by.setdefault((r["backbone"] or "", r["method"]), {})[r["condition"]] = r
    order = list(METHODS)

    def rank(item):
        (bb, method), rs = item
        base = next(iter(rs.values()))["base"]
        return (bb != "", bb, order.index(base) if base in order else len(order), method)

    return dict(sorted(by.items(), key=rank))


def _header(records: list[dict]) -> list[str]:
    hinge = [r for r in records if r["backbone"]]
    meta = hinge[0] if hinge else {}
    backbones = sorted({f"`{r['backbone']}` ({r['backbone_kind']}, {r['arch']})" for r in hinge})
    machines = sorted({r["machine"] for r in records}) or [f"{platform.machine()}, {os.cpu_count()} CPU cores"]
    dates = sorted({r["date"] for r in records}) or [time.strftime("%Y-%m-%d")]
    return [
        f"Machine: {'; '.join(machines)}; runs of {', '.join(dates)}; written by `benchmarks/bench_steer.py "
        f"--report` on {time.strftime('%Y-%m-%d')}.",
        "Protocol: Her2ST patient C, hold out C2, train on C3–C6 (`tl.cross_validate(folds=['C2'])`: the panel is "
        "chosen by `pp.select_genes` on the training sections). Conditions: `oracleK` replaces the image embedding "
        "with the PCA-K scores of the TRUE `pp.normalize` expression of all genes of the table (centre and "
        "components fitted on the C3–C6 spots, applied to every spot, C2 included); `he-stats` is the real "
        "embedding. An oracle holds the answer: a design that can carry a condition turns it into a high PCC-50 on "
        f"C2. HINGE variants: `tl.fit`'s defaults with max_epochs = {meta.get('max_epochs')} (min_epochs = "
        f"{meta.get('min_epochs')}), sampled with K = {meta.get('n_steps')} steps and {meta.get('n_samples')} "
        f"averaged sample(s), seed {meta.get('seed')}. PCC-50 ranks genes by the truth's variance.",
        f"Backbones: {', '.join(backbones) or 'none'}. They are offline stand-ins (pre-trained by sthinge on the "
        "Her2ST sections of patients other than C, at CPU size): the real CellFM weights cannot be had offline.",
        "",
    ]


def report(files: list[Path]) -> str:
    records = _records(files)
    rows = _rows(records)
    conds = sorted({r["condition"] for r in records}, key=_condition_order)
    lines = _header(records) + [
        "| backbone | layers x width | method | lr | "
        + " | ".join(f"PCC-50 {c}" for c in conds)
        + f" | {RATIO_CONDITION} / Scratch | best validation ({RATIO_CONDITION}) | fit (s) |",
        "|---|---|---|---:|" + "---:|" * (len(conds) + 3),
    ]
    for (bb, method), rs in rows.items():
        first = next(iter(rs.values()))
        suffix = method.removeprefix(first["base"])  # the Scratch row of the same backbone and --suffix
        partner = _scratch_of(first["base"]) if first["base"] in METHODS else "scratch"
        scratch = rows.get((bb, partner + suffix), {}).get(RATIO_CONDITION) if bb else None
        mine = rs.get(RATIO_CONDITION)
        ratio = f"{mine['metrics']['pcc50'] / scratch['metrics']['pcc50']:.2f}" if mine and scratch else "–"
        cells = [f"{rs[c]['metrics']['pcc50']:.3f}" if c in rs else "–" for c in conds]
        arch = first["arch"] or "–"
        fit = np.mean([r["fit_seconds"] for r in rs.values()])
        vals = [h["val"] for h in (mine or {}).get("history", []) if "val" in h]
        best = f"{min(vals):.3f}" if vals else "–"
        fit_s = f"{fit:.0f}" if fit >= 10 else f"{fit:.2f}"
        lr = f"{first['lr']:g}" if first.get("lr") else "–"
        lines.append(
            f"| {bb or '–'} | {arch} | {method} | {lr} | " + " | ".join(cells) + f" | {ratio} | {best} | {fit_s} |"
        )
    lines += ["", "Methods: " + "; ".join(f"`{m}`: {what}" for m, (_, what) in METHODS.items()) + "."]
    lines += [
        f"`{RATIO_CONDITION} / Scratch`: PCC-50 over that of the Scratch row of the same backbone, modulation and "
        "learning rate (`scratch` for the paper's design, `scratch-hidden` for `hidden`). "
        f"`best validation`: the lowest per-epoch validation value of the {RATIO_CONDITION} fit (`tl.fit`'s "
        "`val_metric`, MSE of sampled predictions by default). `fit (s)`: mean over the row's conditions.",
        "",
    ]
    return "\n".join(lines)


# ---- command line --------------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    p.add_argument("--conditions", nargs="+", type=_condition, default=CONDITIONS, help="oracle<K> and/or he-stats")
    p.add_argument("--backbone", type=Path, default=None, help="backbone checkpoint (default: default_backbone())")
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--lr", type=float, default=None, help="tl.fit's learning rate (default: tl.fit's, 1e-4)")
    p.add_argument("--n-steps", type=int, default=10, help="sampling step budget K")
    p.add_argument("--n-samples", type=int, default=4, help="averaged samples")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--suffix", default="", help="appended to the method names in the runs file (e.g. '-3ep')")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        help="JSON-lines file(s) of finished runs: runs are appended to the first, --report reads all",
    )
    p.add_argument("--report", action="store_true", help="write the table from --runs and exit")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write the report section into")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    import sthinge as st

    cache = Path(st.settings.cachedir) / "bench"
    args.all_runs = args.runs or [cache / "steer_runs.jsonl"]
    if args.report:
        text = report(args.all_runs)
        if args.out:
            from _report import write_section

            write_section(args.out, MARK, TITLE, text)
        print(text)
        return 0

    import torch

    from sthinge.tl._backbone import default_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    st.settings.verbosity = 1
    data_dir = os.environ.get("STHINGE_DATA_DIR")
    cache.mkdir(parents=True, exist_ok=True)
    table = _prepared(cache, Path(data_dir) / "her2st" if data_dir else None)
    backbone = args.backbone if args.backbone is not None else default_backbone()
    return 1 if run(args, table, backbone, args.all_runs[0]) else 0


if __name__ == "__main__":
    sys.exit(main())
