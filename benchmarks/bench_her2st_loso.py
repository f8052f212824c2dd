"""Leave-one-section-out on Her2ST patient C: HINGE, its ablations and the regression baselines.

Every method sees the same folds, the same gene panel per fold (``pp.select_genes`` on the training sections)
and the same ``he-stats`` embeddings; HINGE and its ablations use the default backbone (``tl._backbone.
default_backbone()``, pre-trained on the Her2ST sections of the other patients, built once and cached).

The work is split into *runs* (one method on one held-out section), each appended as one JSON line to
``--runs`` as soon as it finishes, so the benchmark can be run in pieces, in parallel processes (each with its
own ``--methods`` / ``--folds``) and resumed; a run already in the file is skipped. ``--report`` reads the file
and writes the tables (mean ± sd over folds, paired Wilcoxon of per-gene PCCs pooled across folds) into
``--out`` between ``<!-- bench_her2st_loso:start -->`` / ``<!-- ...:end -->``.

``--tradeoff`` fits HINGE once per fold and samples the held-out section with several step budgets K and numbers
of averaged samples, recording PCC-50 and the sampling time of each.

Examples
--------
    export STHINGE_DATA_DIR=/path/to/data  # the folder holding her2st/
    PYTHONPATH=src python benchmarks/bench_her2st_loso.py --methods ridge mlp knn hinge
    PYTHONPATH=src python benchmarks/bench_her2st_loso.py --methods scratch decoder-tune --folds C2 C3
    PYTHONPATH=src python benchmarks/bench_her2st_loso.py --tradeoff --folds C2
    PYTHONPATH=src python benchmarks/bench_her2st_loso.py --report --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
# name -> (fit kwargs on top of the shared ones, description)
HINGE_VARIANTS: dict[str, tuple[dict, str]] = {
    "hinge": (
        {},
        "frozen pre-trained backbone + SoftAdaLN (official init, Gaussian fill, the official code's loss on "
        "the genes revealed at the step)",
    ),
    "scratch": ({"config": {"variant": "scratch"}}, "same architecture, every weight random and trained"),
    "decoder-tune": ({"config": {"variant": "decoder-tune"}}, "HINGE + the backbone's value decoder fine-tuned"),
    "nocurr": ({"curriculum_epochs": 0}, "no warm-start curriculum"),
    "zerofill": (
        {"config": {"mask_fill": "zero"}},
        "masked values filled with zeros (the paper's main HINGE; sthinge's default Gaussian fill is the "
        "paper's RandMask)",
    ),
    "noidinit": ({"config": {"variant": "noidinit"}}, "SoftAdaLN without identity initialisation"),
    "nosoftnorm": ({"config": {"variant": "nosoftnorm"}}, "SoftAdaLN without SoftNorm"),
    "pi-t": ({"loss_weight": "pi_t"}, "HINGE with the loss weighted by π_t over all masked genes (the paper's Eq. 2)"),
    "masked-loss": (
        {"loss_weight": "masked", "config": {"likelihood": "point"}},
        "HINGE with the loss on every masked gene, equally weighted (`tl.fit`'s default loss since 2026-11-26), "
        "point decoder",
    ),
    "gaussian": (
        {"loss_weight": "masked", "lr": 1e-4, "config": {"likelihood": "gaussian", "modulation": "paper"}},
        "`masked-loss` with the Gaussian decoder (`tl.fit`'s default from 2026-12-03 to 2026-12-04, lr 1e-4): mean of "
        "4 drawn samples",
    ),
    "hidden": (
        {"loss_weight": "masked", "lr": None, "config": {"likelihood": "gaussian", "modulation": "hidden"}},
        "the `gaussian` row with `modulation='hidden'` (the condition also scales the hidden units of every frozen "
        "feed-forward and of the decoder) and `tl.fit`'s width-scaled learning rate (1e-3 on the 128-wide default "
        "backbone): `tl.fit`'s defaults since 2026-12-04",
    ),
    "paper-lr": (
        {"loss_weight": "masked", "lr": None, "config": {"likelihood": "gaussian", "modulation": "paper"}},
        "the `gaussian` row (the paper's SoftAdaLN only) with `tl.fit`'s width-scaled learning rate (1e-3 on the "
        "default backbone): what the learning rate alone does",
    ),
    "scratch-hidden": (
        {
            "loss_weight": "masked",
            "lr": None,
            "config": {"variant": "scratch", "likelihood": "gaussian", "modulation": "hidden"},
        },
        "Scratch with `tl.fit`'s defaults since 2026-12-04 (the `hidden` row's architecture and learning rate, every "
        "weight random and trained)",
    ),
    "cosine": (
        {"loss_weight": "masked", "config": {"likelihood": "gaussian", "schedule": "cosine"}},
        "the `gaussian` row with the cosine masking schedule (the paper's Table S4)",
    ),
    "gauss-diff": (
        {"loss_weight": "masked", "config": {"objective": "gauss-diff", "likelihood": "point"}},
        "Gaussian (DDPM) diffusion over all genes on the same frozen backbone and SoftAdaLN, point decoder "
        "(the paper's Gauss-Diff, Table 3)",
    ),
    "hinge-scgpt": (
        {"loss_weight": "masked", "config": {"likelihood": "gaussian"}},
        "HINGE on scGPT: the `gaussian` row on a frozen scGPT-shaped stand-in backbone (`scgpt-cpu-small`, "
        "pre-trained with scGPT's masked-value objective on the same Her2ST sections as the default backbone; "
        "run with `--backbone` its folder)",
    ),
    "scratch-gaussian": (
        {
            "config": {"variant": "scratch", "likelihood": "gaussian", "modulation": "paper"},
            "loss_weight": "masked",
            "lr": 1e-4,
        },
        "Scratch with `tl.fit`'s defaults (masked-gene loss, Gaussian decoder), as the `gaussian` row",
    ),
    "scratch-masked": (
        {"config": {"variant": "scratch"}, "loss_weight": "masked"},
        "Scratch trained with the masked-gene loss (as `masked-loss`)",
    ),
    "randfrozen": ({}, "diagnostic: HINGE on a frozen *random* backbone of the same architecture (no pre-training)"),
}
BASELINES = {
    "ridge": "ridge regression (alpha by inner CV)",
    "mlp": "MLP (one hidden layer of 256)",
    "knn": "k nearest neighbours in embedding space",
}
METHODS = list(HINGE_VARIANTS) + list(BASELINES)
MARK = "bench_her2st_loso"
TITLE = "Her2ST patient C, leave-one-section-out: HINGE, ablations and baselines"


def _prepared(cache: Path, data_dir: Path | None):
    """C2–C6 normalised with he-stats embeddings, as one AnnData table (cached as h5ad)."""
    import anndata as ad

    import sthinge as st
    from sthinge import _constants as K

    path = cache / "her2st_C_he-stats.h5ad"
    if path.exists():
        return ad.read_h5ad(path)
    sdata = st.datasets.her2st(SECTIONS, path=data_dir)
    st.pp.normalize(sdata)
    st.pp.embed_histology(sdata, encoder="he-stats")
    table = sdata.tables[K.TABLE_KEY]
    table = ad.AnnData(
        X=table.X,
        obs=table.obs.copy(),
        var=table.var.copy(),
        layers=dict(table.layers),
        obsm={k: np.asarray(v) for k, v in table.obsm.items()},
        uns=dict(table.uns),
    )
    for key in [k for k in table.uns if k != K.UNS_NORMALIZE]:
        del table.uns[key]
    table.var = table.var.astype({c: str for c in table.var.columns if table.var[c].dtype == object})
    table.obs = table.obs.astype({c: str for c in table.obs.columns if table.obs[c].dtype == object})
    tmp = path.with_suffix(".tmp.h5ad")
    table.write_h5ad(tmp)
    os.replace(tmp, path)
    return table


def _done(runs: list[Path]) -> set[tuple[str, ...]]:
    out = set()
    lines = [x for f in runs if f.exists() for x in f.read_text().splitlines()]
    for line in lines:
        if line.strip():
            r = json.loads(line)
            out.add((r["kind"], r["method"], r["fold"]) if r["kind"] == "tradeoff" else (r["method"], r["fold"]))
    return out


def _append(runs: Path, record: dict) -> None:
    runs.parent.mkdir(parents=True, exist_ok=True)
    with open(runs, "a") as fh:  # one short line per run: appends of whole lines are atomic enough here
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _fit_kwargs(method: str, args, backbone) -> dict:
    # the official code's loss for HINGE and its ablations (tl.fit's default until 2026-11-26); the loss variants
    # below override it
    # and the paper's design and learning rate (tl.fit's defaults until 2026-12-04): rows that use tl.fit's newer
    # defaults say so with "lr": None and their own "modulation"
    kw = dict(
        backbone=str(backbone),
        max_epochs=args.max_epochs,
        min_epochs=min(15, args.max_epochs),
        loss_weight="revealed",
        lr=1e-4,
    )
    if method == "randfrozen":  # the default backbone's architecture with CellFM's random initialisation
        import torch

        from sthinge.io import load_cellfm

        net = load_cellfm(backbone)
        torch.manual_seed(args.seed)
        net.reset_parameters()
        kw["backbone"] = net
    kw.update(HINGE_VARIANTS[method][0])
    kw["config"] = {"modulation": "paper", **kw.get("config", {})}
    return kw


def _what(method: str, args) -> str:
    what = HINGE_VARIANTS[method][1] if method in HINGE_VARIANTS else BASELINES[method]
    if method in HINGE_VARIANTS and args.backbone is not None:
        what += f"; backbone `{Path(args.backbone).name}`"
    return what


def run_methods(args, table, backbone, runs: Path) -> None:
    import sthinge as st

    done = _done(args.all_runs)
    for fold in args.folds:
        for method in args.methods:
            name = method + args.suffix
            if (name, fold) in done:
                print(f"skip {name} {fold}: already in {runs}", flush=True)
                continue
            start = time.perf_counter()
            if method in HINGE_VARIANTS:
                res = st.tl.cross_validate(
                    table,
                    method="hinge",
                    folds=[fold],
                    sections=SECTIONS,
                    fit_kwargs=_fit_kwargs(method, args, backbone),
                    predict_kwargs=dict(n_steps=args.n_steps, n_samples=args.n_samples),
                    seed=args.seed,
                )
            else:
                res = st.tl.cross_validate(table, method=method, folds=[fold], sections=SECTIONS, seed=args.seed)
            per_gene = res.attrs["details"].per_gene
            row = res.iloc[0]
            record = {
                "kind": "loso",
                "method": name,
                "fold": fold,
                "seed": args.seed,
                "what": _what(method, args),
                "max_epochs": args.max_epochs if method in HINGE_VARIANTS else None,
                "n_steps": args.n_steps if method in HINGE_VARIANTS else None,
                "n_samples": args.n_samples if method in HINGE_VARIANTS else None,
                "metrics": {m: float(row[m]) for m in ("pcc50", "pcc", "mse", "mae", "ssim")},
                "n_panel": int(row["n_panel"]),
                "fit_seconds": float(row["fit_seconds"]),
                "predict_seconds": float(row["predict_seconds"]),
                "wall_seconds": time.perf_counter() - start,
                "per_gene_pcc": {
                    str(g): (None if not np.isfinite(p) else float(p))
                    for g, p in zip(per_gene["gene"], per_gene["pcc"])
                },
            }
            _append(runs, record)
            print(
                f"{name:>12} {fold}: PCC-50 {record['metrics']['pcc50']:.3f} ({record['wall_seconds']:.0f} s)",
                flush=True,
            )


def run_tradeoff(args, table, backbone, runs: Path) -> None:
    import sthinge as st
    from sthinge import _constants as K

    done = _done(args.all_runs)
    for fold in args.folds:
        if ("tradeoff", "hinge", fold) in done:
            print(f"skip trade-off {fold}: already in {runs}", flush=True)
            continue
        train = [s for s in SECTIONS if s != fold]
        work = table.copy()
        st.pp.select_genes(work, train_sections=train, vocab="cellfm-80m")
        model = st.tl.fit(work, **_fit_kwargs("hinge", args, backbone), train_sections=train, seed=args.seed)
        grid = []
        for k in args.ks:
            for n in args.samples:
                start = time.perf_counter()
                st.tl.predict(
                    work,
                    model,
                    sections=[fold],
                    n_steps=k,
                    n_samples=n,
                    seed=args.seed,
                    key_added="bench",
                    overwrite=True,
                )
                seconds = time.perf_counter() - start
                res = st.tl.evaluate(work, pred_key="bench", metrics=("pcc50", "mse"))
                res.index = res.index.astype(str)
                grid.append(
                    {
                        "k": k,
                        "n_samples": n,
                        "pcc50": float(res.loc[fold, "pcc50"]),
                        "mse": float(res.loc[fold, "mse"]),
                        "seconds": seconds,
                        "spots": int((work.obs[K.SECTION_KEY].astype(str) == fold).sum()),
                    }
                )
                print(f"trade-off {fold} K={k} n={n}: PCC-50 {grid[-1]['pcc50']:.3f} in {seconds:.1f} s", flush=True)
        _append(
            runs,
            {
                "kind": "tradeoff",
                "method": "hinge",
                "fold": fold,
                "seed": args.seed,
                "max_epochs": args.max_epochs,
                "grid": grid,
            },
        )


def _metric(record: dict, name: str) -> float:
    """A metric of a stored run; runs recorded before PCC-k became NaN below k genes stored the mean PCC over all
    (116 < 200) panel genes as 'pcc200', which is 'pcc'."""
    metrics = record["metrics"]
    return metrics[name] if name in metrics else metrics["pcc200"] if name == "pcc" else np.nan


def _fmt(values: list[float], digits: int = 3) -> str:
    a = np.asarray(values, dtype=float)
    if len(a) == 0:
        return "–"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.{digits}f}"


def report(runs: list[Path], reference: str | list[str] = "hinge") -> str:
    from scipy.stats import wilcoxon

    refs = [reference] if isinstance(reference, str) else list(reference)

    records = [json.loads(x) for f in runs if f.exists() for x in f.read_text().splitlines() if x.strip()]
    loso = [r for r in records if r["kind"] == "loso"]
    trade = [r for r in records if r["kind"] == "tradeoff"]
    by = {}
    for r in loso:
        by.setdefault(r["method"], {})[r["fold"]] = r
    meta = next((r for r in loso if r["method"] in HINGE_VARIANTS), {})
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}. Written by `benchmarks/bench_her2st_loso.py --report` from "
        f"{', '.join(f'`{f.name}`' for f in runs)}.",
        "Inputs: sections C2–C6, `pp.normalize` (ln(1 + CP10k)), `he-stats` embeddings (104-d), the panel of each "
        "fold chosen by `pp.select_genes` on its four training sections (HMHVG, 80M vocabulary). HINGE and its "
        f"ablations: default backbone (cpu-small, pre-trained on Her2ST patients A, B, D–H), max_epochs = "
        f"{meta.get('max_epochs')}, the paper's other fit defaults (SoftAdaLN alone, lr 1e-4) and the official "
        "code's loss (`loss_weight='revealed'`) unless the row says otherwise, sampled with K = "
        f"{meta.get('n_steps') or 'T'} "
        f"steps and {meta.get('n_samples')} averaged sample(s), seed {meta.get('seed')}. PCC-k ranks genes by "
        "the truth's variance (`rank_by='variance'`). Mean ± sd over the folds present.",
        "",
        "```bash",
        "export STHINGE_DATA_DIR=/path/to/data  # the folder holding her2st/",
        "PYTHONPATH=src python benchmarks/bench_her2st_loso.py --methods ridge mlp knn hinge scratch decoder-tune "
        "nocurr zerofill noidinit nosoftnorm pi-t masked-loss scratch-masked randfrozen",
        "PYTHONPATH=src python benchmarks/bench_her2st_loso.py --tradeoff",
        "PYTHONPATH=src python benchmarks/bench_her2st_loso.py --report --out docs/benchmarks.md",
        "```",
        "",
        "| method | what | folds | PCC-50 | PCC (all genes) | MSE | MAE | SSIM | PCC-50 / ridge | fit (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    ridge50 = np.mean([r["metrics"]["pcc50"] for r in by.get("ridge", {}).values()]) if "ridge" in by else np.nan
    order = [m for m in METHODS if m in by] + sorted(m for m in by if m not in METHODS)
    # the current description of a known method (the runs file keeps the one of its day); a --suffix run of a
    # known method ("hinge (3-epoch backbone)") gets its method's description and keeps its stored backbone note
    known = {**{m: d for m, (_, d) in HINGE_VARIANTS.items()}, **BASELINES}
    for method in order:
        rs = [by[method][f] for f in SECTIONS if f in by[method]]
        stored, base = rs[0].get("what", ""), method.split(" ")[0]
        if method not in known and base in known and "; backbone" in stored:
            stored = known[base] + stored[stored.index("; backbone") :]
        what = known.get(method) or stored
        # the ratio on the folds both have
        common = [f for f in SECTIONS if f in by[method] and f in by.get("ridge", {})]
        ratio = (
            (
                np.mean([by[method][f]["metrics"]["pcc50"] for f in common])
                / np.mean([by["ridge"][f]["metrics"]["pcc50"] for f in common])
            )
            if common
            else np.nan
        )
        cells = [_fmt([_metric(r, m) for r in rs]) for m in ("pcc50", "pcc", "mse", "mae", "ssim")]
        lines.append(
            f"| {method} | {what} | {','.join(r['fold'] for r in rs)} | "
            + " | ".join(cells)
            + f" | {ratio:.2f} | {np.mean([r['fit_seconds'] for r in rs]):.0f} |"
        )
    lines.append("")
    lines.append(f"Ridge PCC-50 over its folds: {ridge50:.3f}.")
    lines.append("")

    # ---- paired Wilcoxon over pooled per-gene PCCs --------------------------------------------------------
    def paired(method: str, other: str) -> tuple[np.ndarray, np.ndarray]:
        a, b = [], []
        for f, r in by[method].items():
            rr = by.get(other, {}).get(f)
            if rr is None:
                continue
            for g, p in r["per_gene_pcc"].items():
                q = rr["per_gene_pcc"].get(g)
                if p is not None and q is not None:
                    a.append(p)
                    b.append(q)
        return np.asarray(a), np.asarray(b)

    def cells(method: str, other: str) -> str:
        if other not in by or method == other:
            return "– | – | – | –"
        a, b = paired(method, other)
        if len(a) < 10:
            return f"{len(a)} | – | – | –"
        d = a - b
        return f"{len(a)} | {np.median(d):+.3f} | {(d > 0).mean():.0%} | {wilcoxon(a, b).pvalue:.2g}"

    if "ridge" in by:
        lines += [
            "Paired Wilcoxon signed-rank tests of per-gene PCCs pooled across folds (pairs: the same gene in "
            "the same fold, on the folds both methods have; genes with an undefined PCC in either left out). "
            'Δ = method − reference; "better" = share of genes where the method\'s PCC is higher.',
            "",
            "| method | pairs vs ridge | median Δ | better | p (two-sided) | "
            + " | ".join(f"pairs vs {ref} | median Δ | better | p (two-sided)" for ref in refs)
            + " |",
            "|---|" + "---:|" * (4 * (1 + len(refs))),
        ]
        for method in order:
            if method == "ridge":
                continue
            lines.append(
                f"| {method} | {cells(method, 'ridge')} | " + " | ".join(cells(method, ref) for ref in refs) + " |"
            )
        lines.append("")
    # ---- step budget / samples trade-off ------------------------------------------------------------------
    if trade:
        lines += [
            "### Step budget K and averaged samples (HINGE, sampling the held-out section)",
            "",
            f"Folds: {', '.join(r['fold'] for r in trade)}; mean PCC-50 and sampling time over them "
            "(the same fitted model per fold for every cell; CPU).",
            "",
            "| K | samples | PCC-50 | MSE | sampling (s) | spots/s |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        cells = {}
        for r in trade:
            for g in r["grid"]:
                cells.setdefault((g["k"], g["n_samples"]), []).append(g)
        for (k, n), gs in sorted(cells.items(), key=lambda kv: (-kv[0][0], kv[0][1])):
            sec = np.mean([g["seconds"] for g in gs])
            spots = np.mean([g["spots"] for g in gs])
            lines.append(
                f"| {k} | {n} | {np.mean([g['pcc50'] for g in gs]):.3f} | "
                f"{np.mean([g['mse'] for g in gs]):.3f} | {sec:.1f} | {spots / sec:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=["ridge", "mlp", "knn", "hinge"], choices=METHODS)
    p.add_argument("--folds", nargs="+", default=SECTIONS, choices=SECTIONS)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--n-steps", type=int, default=10, help="sampling step budget K of the main table")
    p.add_argument("--n-samples", type=int, default=4, help="averaged samples of the main table")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--backbone",
        type=Path,
        default=None,
        help="backbone checkpoint of HINGE and its ablations (default: default_backbone())",
    )
    p.add_argument("--suffix", default="", help="appended to the method names in the runs file (e.g. '-3ep')")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch's default)")
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        help="JSON-lines file(s) of finished runs: runs are appended to the first, --report reads all "
        "(give each parallel process its own file)",
    )
    p.add_argument("--tradeoff", action="store_true", help="the K x n_samples grid instead of --methods")
    p.add_argument("--ks", nargs="+", type=int, default=[50, 10, 5])
    p.add_argument("--samples", nargs="+", type=int, default=[1, 4, 16])
    p.add_argument("--report", action="store_true", help="write the tables from --runs and exit")
    p.add_argument("--out", type=Path, default=None, help="markdown file to write the report section into")
    p.add_argument(
        "--reference", nargs="+", default=["hinge"], help="further references of the paired tests (besides ridge)"
    )
    p.add_argument(
        "--section",
        nargs=2,
        metavar=("NAME", "TITLE"),
        default=None,
        help="write the report into its own section (marker bench_her2st_loso_NAME, heading TITLE) instead of the "
        "main one, e.g. for a table of other runs files",
    )
    args = p.parse_args(argv)

    import sthinge as st

    cache = Path(st.settings.cachedir) / "bench"
    all_runs = args.runs or [cache / "her2st_loso_runs.jsonl"]
    runs = all_runs[0]
    args.all_runs = all_runs
    if args.report:
        text = report(all_runs, args.reference)
        if args.out:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            from _report import write_section

            mark, title = (f"{MARK}_{args.section[0]}", args.section[1]) if args.section else (MARK, TITLE)
            write_section(args.out, mark, title, text)
        print(text)
        return 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    st.settings.verbosity = 1
    from sthinge.tl._backbone import default_backbone

    data_dir = os.environ.get("STHINGE_DATA_DIR")
    her2st_dir = Path(data_dir) / "her2st" if data_dir else None
    cache.mkdir(parents=True, exist_ok=True)
    table = _prepared(cache, her2st_dir)
    backbone = args.backbone if args.backbone is not None else default_backbone()
    if args.tradeoff:
        run_tradeoff(args, table, backbone, runs)
    else:
        run_methods(args, table, backbone, runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
