"""Uncertainty on Her2ST patient C, leave-one-section-out: coverage, CRPS, Spearman(std, |error|), co-expression.

For every held-out section (fold) of C2–C6, the panel is chosen on the four training sections and:

* ``ridge``: ridge regression with its Gaussian std (out-of-fold residuals of the training sections) and the
  same split-conformal step on those residuals;
* ``hinge-<likelihood>-<calibration>``: HINGE with the default backbone, ``likelihood`` ``point`` (the paper's x̂₀
  sampler) or ``gaussian`` (draws from the decoder's censored Gaussian), trained on three of the four training
  sections; the fourth (the one after the held-out section in C2–C6, cyclically) is held out of training. The same
  model is calibrated twice: on its validation spots (``val``: random spots of its training sections, what
  ``tl.fit`` does without ``calibration_sections``) and on the held-out training section (``section``: what
  ``tl.fit(calibration_sections=[...])`` does). So the two calibrations are compared on one model.
* ``hinge-default``: ``tl.fit`` with its defaults (Gaussian decoder) on all four training sections, calibrated by
  ``tl.fit`` on its validation spots: what a user gets.

Every calibration samples with the ``--n-steps`` and ``--n-samples`` that the held-out section is predicted with.

Each run predicts the held-out section with ``--n-steps`` steps and ``--n-samples`` samples and records, per
section and as the median over genes: the coverage of the 50/80/90/95 % intervals, their mean width, the CRPS
(from the samples; Gaussian for ridge), Spearman(std, |error|) averaged over genes, PCC-50 of the mean, and the
co-expression similarity of the mean and of one sample (for ridge: the mean plus one Gaussian draw per spot and
gene). The Gaussian runs also time the sampler against the point sampler on the same model, inputs, K and
samples (``draw=False``), interleaved, as a ratio.

Runs are appended to ``--runs`` (one JSON line each) and skipped when present; ``--report`` writes the tables.

Examples
--------
    export STHINGE_DATA_DIR=/path/to/data  # the folder holding her2st/
    PYTHONPATH=src python benchmarks/bench_uncertainty.py --methods ridge hinge-point-val hinge-gaussian-val
    PYTHONPATH=src python benchmarks/bench_uncertainty.py --report --out docs/benchmarks.md
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

sys.path.insert(0, str(Path(__file__).parent))

SECTIONS = ["C2", "C3", "C4", "C5", "C6"]
# each "hinge-<likelihood>" run gives a "-val" and a "-section" record; "hinge-default" is `tl.fit` as it comes
METHODS = ["ridge", "hinge-point", "hinge-gaussian", "hinge-default"]
LEVELS = (0.5, 0.8, 0.9, 0.95)
MARK = "bench_uncertainty"
TITLE = "Uncertainty: calibrated intervals on Her2ST patient C, leave-one-section-out"


def _calibration_section(fold: str) -> str:
    i = SECTIONS.index(fold)
    return SECTIONS[(i + 1) % len(SECTIONS)]


def _single_sample_table(work, key: str, draw):
    """A copy of the prediction ``key`` of the AnnData ``work`` whose mean is one sample (for co-expression)."""
    one = work.copy()
    frame = one.obsm[key]
    one.obsm[key] = frame.__class__(draw(frame.to_numpy()), index=frame.index, columns=frame.columns)
    return one


def _record(work, key: str, fold: str, samples_key: str | None, rng) -> dict:
    import sthinge as st

    res = st.tl.evaluate(work, pred_key=key, metrics=("pcc50", "mse"), levels=LEVELS)
    res.index = res.index.astype(str)
    genes = st.tl.evaluate(work, pred_key=key, metrics=("pcc",), levels=LEVELS, per_gene=True)
    row = res.loc[fold]
    out = {m: float(row[m]) for m in ("pcc50", "mse", "crps", "unc_spearman")}
    for level in LEVELS:
        lab = f"{100 * level:g}"
        out[f"coverage{lab}"] = float(row[f"coverage{lab}"])
        out[f"median_gene_coverage{lab}"] = float(np.nanmedian(genes[f"coverage{lab}"]))
        out[f"width{lab}"] = float(row[f"width{lab}"])
    out["interval_method"] = str(row["interval_method"])
    out["coexpression_mean"] = float(st.tl.coexpression(work, pred_key=key, section=fold).similarity)
    if samples_key is not None:
        samples = np.asarray(work.obsm[samples_key])
        rows = np.flatnonzero(np.isfinite(work.obsm[key].to_numpy()).all(1))
        one = _single_sample_table(work, key, lambda m: _put(m, rows, samples[rows, 0, :]))
    else:
        std = work.obsm[f"{key}_std"].to_numpy()
        one = _single_sample_table(work, key, lambda m: np.maximum(m + std * rng.normal(size=m.shape), 0.0))
    out["coexpression_sample"] = float(st.tl.coexpression(one, pred_key=key, section=fold).similarity)
    return out


def _put(full: np.ndarray, rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    full = full.copy()
    full[rows] = values
    return full


def _sampler_ratio(model, work, fold: str, n_steps: int, n_samples: int, reps: int = 3) -> dict:
    """Seconds of the drawing sampler vs the point sampler on the same model and inputs (interleaved, medians)."""
    import torch

    from sthinge.models import sample

    emb = np.asarray(work.obsm[model.embedding_key])[(work.obs["section"].astype(str) == fold).to_numpy()]
    cond = torch.from_numpy(model.standardize(emb))
    times = {True: [], False: []}
    for _ in range(reps):
        for draw in (False, True):
            g = torch.Generator().manual_seed(0)
            start = time.perf_counter()
            sample(model.module.eval(), cond, n_steps=n_steps, n_samples=n_samples, generator=g, draw=draw)
            times[draw].append(time.perf_counter() - start)
    point, drawing = float(np.median(times[False])), float(np.median(times[True]))
    return {"point_seconds": point, "draw_seconds": drawing, "ratio": drawing / point}


def run(args, table, backbone, runs: Path) -> None:
    import sthinge as st

    done = {(r["method"].replace("-val", "").replace("-section", ""), r["fold"]) for r in _records([runs])}
    for fold in args.folds:
        train = [s for s in SECTIONS if s != fold]
        for method in args.methods:
            if (method, fold) in done:
                print(f"skip {method} {fold}", flush=True)
                continue
            work = table.copy()
            st.pp.select_genes(work, train_sections=train, vocab="cellfm-80m")
            rng = np.random.default_rng(args.seed)
            start = time.perf_counter()
            extra = {}
            if method == "ridge":
                model = st.tl.fit_baseline(work, method="ridge", train_sections=train, seed=args.seed)
                fit_s = time.perf_counter() - start
                t = time.perf_counter()
                st.tl.predict_baseline(work, model, sections=[fold], key_added="pred", levels=LEVELS)
                pred_s = time.perf_counter() - t
                samples_key = None
            elif method == "hinge-default":
                model = st.tl.fit(
                    work,
                    backbone=str(backbone),
                    max_epochs=args.max_epochs,
                    min_epochs=min(15, args.max_epochs),
                    train_sections=train,
                    calibration_samples=args.n_samples,
                    calibration_steps=args.n_steps,
                    seed=args.seed,
                )
                fit_s = time.perf_counter() - start
                pred_s = _predict_held_out(args, work, model, fold)
                samples_key = "pred_samples"
                extra = {
                    "calibration_spots": int(model.calibration.n),
                    "calibration_steps": args.n_steps,
                    "epochs": len(model.history),
                }
            else:
                _fit_hinge(args, work, method, fold, train, backbone, runs)
                continue
            _save(runs, args, method, fold, fit_s, pred_s, _record(work, "pred", fold, samples_key, rng), extra)


def _predict_held_out(args, work, model, fold: str) -> float:
    """Predict ``fold`` into ``work`` as ``"pred"`` (with samples and the interval layers); return the seconds."""
    import sthinge as st

    start = time.perf_counter()
    st.tl.predict(
        work,
        model,
        sections=[fold],
        n_steps=args.n_steps,
        n_samples=args.n_samples,
        seed=args.seed,
        key_added="pred",
        levels=LEVELS,
        return_samples=True,
        overwrite=True,
    )
    return time.perf_counter() - start


def _fit_hinge(args, work, method: str, fold: str, train: list[str], backbone, runs: Path) -> None:
    """One fit held out of ``_calibration_section(fold)``; two calibrations of it, two records."""
    import sthinge as st
    from sthinge.tl._calibrate import calibrate_after_fit
    from sthinge.tl._data import split_rows

    likelihood = method.split("-")[1]
    cal_section = _calibration_section(fold)
    kw = dict(
        backbone=str(backbone),
        max_epochs=args.max_epochs,
        min_epochs=min(15, args.max_epochs),
        train_sections=train,
        calibration_sections=[cal_section],
        calibration_samples=args.n_samples,
        calibration_steps=args.n_steps,
        seed=args.seed,
    )
    if likelihood != "point":
        kw["config"] = {"likelihood": likelihood}
    start = time.perf_counter()
    model = st.tl.fit(work, **kw)
    fit_s = time.perf_counter() - start
    section_cal = model.calibration
    # the validation spots of that fit (the same split as `tl.fit`: its default val_fraction 0.1 and seed)
    sections = work.obs["section"].astype(str).to_numpy()
    rows = np.flatnonzero(np.isin(sections, [s for s in train if s != cal_section]))
    _, val_idx = split_rows(len(rows), 0.1, args.seed)
    calibrate_after_fit(
        model,
        work,
        rows[val_idx],
        model.genes,
        model.layer,
        model.embedding_key,
        args.n_samples,
        args.seed,
        "validation spots",
        "section",
        n_steps=args.n_steps,
    )
    val_cal = model.calibration
    extra = (
        {"sampler": _sampler_ratio(model, work, fold, args.n_steps, args.n_samples)} if likelihood != "point" else {}
    )
    for name, cal in (("val", val_cal), ("section", section_cal)):
        model.calibration = cal
        pred_s = _predict_held_out(args, work, model, fold)
        rng = np.random.default_rng(args.seed)
        info = {"calibration_spots": int(cal.n), "calibration_section": cal_section, "epochs": len(model.history)}
        info["calibration_steps"] = args.n_steps
        metrics = _record(work, "pred", fold, "pred_samples", rng)
        _save(runs, args, f"{method}-{name}", fold, fit_s, pred_s, metrics, {**info, **extra})


def _save(runs: Path, args, method: str, fold: str, fit_s: float, pred_s: float, metrics: dict, extra: dict) -> None:
    """Append one run to ``runs`` (a JSON line) and print its headline numbers."""
    record = {
        "kind": "uncertainty",
        "method": method,
        "fold": fold,
        "seed": args.seed,
        "max_epochs": args.max_epochs,
        "n_steps": args.n_steps,
        "n_samples": args.n_samples,
        "fit_seconds": fit_s,
        "predict_seconds": pred_s,
        "metrics": metrics,
        **extra,
    }
    with open(runs, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    m = metrics
    print(
        f"{method:>24} {fold}: cov50 {m['coverage50']:.3f} cov90 {m['coverage90']:.3f} CRPS {m['crps']:.3f} "
        f"rho {m['unc_spearman']:.3f} PCC-50 {m['pcc50']:.3f} ({fit_s:.0f} + {pred_s:.0f} s)",
        flush=True,
    )


def _records(runs: list[Path]) -> list[dict]:
    return [json.loads(x) for f in runs if f.exists() for x in f.read_text().splitlines() if x.strip()]


def _fmt(values, digits: int = 3) -> str:
    a = np.asarray(values, dtype=float)
    if a.size == 0 or np.isnan(a).all():  # e.g. Spearman(std, error) of a std that is the same for every spot
        return "–"
    return f"{a.mean():.{digits}f} ± {a.std(ddof=1) if a.size > 1 else 0.0:.{digits}f}"


def _range(values, digits: int = 3) -> str:
    a = np.asarray(values, dtype=float)
    return "–" if a.size == 0 else f"{a.min():.{digits}f}–{a.max():.{digits}f}"


def _calibration_steps(recs: list[dict]) -> str:
    """Which methods' calibrations used which sampler steps, in words."""
    steps: dict[str, set] = {}
    for r in recs:
        if r["method"] != "ridge":
            steps.setdefault(r["method"], set()).add(r.get("calibration_steps", 50))
    return "; ".join(f"{m} K = {', '.join(str(k) for k in sorted(v))}" for m, v in sorted(steps.items()))


def report(runs: list[Path]) -> str:
    recs = [r for r in _records(runs) if r.get("kind") == "uncertainty"]
    by: dict[str, dict[str, dict]] = {}
    for r in recs:
        by.setdefault(r["method"], {})[r["fold"]] = r
    meta = next((r for r in recs if r["method"] != "ridge"), recs[0] if recs else {})
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores; Python {platform.python_version()}; "
        f"{time.strftime('%Y-%m-%d')}. Written by `benchmarks/bench_uncertainty.py --report` from "
        f"{', '.join(f'`{f.name}`' for f in runs)}. HINGE: default backbone (offline stand-in for CellFM, so its "
        f"accuracy stays below ridge here), max_epochs = {meta.get('max_epochs')}, K = {meta.get('n_steps')} steps, "
        f"{meta.get('n_samples')} samples, seed {meta.get('seed')}. Intervals are split-conformal "
        "(`tl.calibrate`) with the samples of the prediction and, where the run records it, its K "
        "(`calibration_steps`; runs without it were calibrated at the model's T = 50 steps): "
        f"{_calibration_steps(recs)}. `hinge-default` "
        "is `tl.fit` with its defaults (Gaussian decoder, all four training sections, calibrated on its validation "
        "spots). The other HINGE models are trained on three of the four training sections and calibrated twice: "
        "`val` on its validation spots (random spots of its training sections), `section` on the fourth training "
        "section, held out of training (the one after the test section, cyclically). Ridge: "
        "conformal on its out-of-fold (section-fold) residuals. Mean ± sd over folds; 'median gene' is the median "
        "over genes of the per-gene coverage on the held-out section, shown as the range over folds. Ridge's std is "
        "one value per gene for every spot, so it cannot rank spots (Spearman '–'). 'co-expr.': similarity of the "
        "gene-gene correlation matrix to the truth's (`tl.coexpression`), of the mean and of one sample (ridge: the "
        "mean plus one Gaussian draw of its std).",
        "",
        "| method | folds | cov. 50 % | cov. 90 % | median gene 50 % (range) | median gene 90 % (range) | "
        "width 90 % | CRPS | Spearman(std, err) | PCC-50 | co-expr. mean | co-expr. 1 sample |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = [
        "ridge",
        "hinge-point-val",
        "hinge-point-section",
        "hinge-gaussian-val",
        "hinge-gaussian-section",
        "hinge-default",
    ]
    for method in [m for m in order if m in by] + sorted(m for m in by if m not in order):
        rs = list(by[method].values())

        def col(name, rs=rs):
            return [r["metrics"][name] for r in rs]

        lines.append(
            f"| {method} | {len(rs)} | {_fmt(col('coverage50'))} | {_fmt(col('coverage90'))} | "
            f"{_range(col('median_gene_coverage50'))} | {_range(col('median_gene_coverage90'))} | "
            f"{_fmt(col('width90'))} | {_fmt(col('crps'))} | {_fmt(col('unc_spearman'))} | {_fmt(col('pcc50'))} | "
            f"{_fmt(col('coexpression_mean'))} | {_fmt(col('coexpression_sample'))} |"
        )
    crps = [
        (f, by[m][f]["metrics"]["crps"], by["ridge"][f]["metrics"]["crps"])
        for m in by
        if m != "ridge" and "ridge" in by
        for f in by[m]
        if f in by["ridge"]
    ]
    if crps:
        lines += [
            "",
            "CRPS per fold against ridge (lower is better):",
            "",
            "| method | " + " | ".join(SECTIONS) + " |",
            "|---|" + "---:|" * len(SECTIONS),
        ]
        for method in [m for m in order if m in by and m != "ridge"]:
            cells = []
            for f in SECTIONS:
                if f in by[method] and f in by.get("ridge", {}):
                    a, b = by[method][f]["metrics"]["crps"], by["ridge"][f]["metrics"]["crps"]
                    cells.append(f"{a:.3f} vs {b:.3f}")
                else:
                    cells.append("–")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
    ratios = [r["sampler"]["ratio"] for r in recs if "sampler" in r]
    if ratios:
        lines += [
            "",
            f"Sampling cost of the Gaussian draws against the point sampler on the same model, K and "
            f"samples (interleaved, median of 3 each): ratio {_fmt(ratios, 2)} over {len(ratios)} runs.",
        ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    p.add_argument("--folds", nargs="+", default=SECTIONS, choices=SECTIONS)
    p.add_argument("--max-epochs", type=int, default=30)
    p.add_argument("--n-steps", type=int, default=10)
    p.add_argument("--n-samples", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument(
        "--runs",
        type=Path,
        nargs="+",
        default=None,
        help="JSON-lines files of runs (default: <cache>/bench/runs_uncertainty.jsonl); new runs go to the first",
    )
    p.add_argument("--report", action="store_true")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.runs is None:
        from sthinge._settings import settings

        args.runs = [settings.cachedir / "bench" / "runs_uncertainty.jsonl"]
    if args.report:
        text = report(args.runs)
        if args.out is None:
            print(text)
        else:
            from _report import write_section

            write_section(args.out, MARK, TITLE, text)
        return 0
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from bench_her2st_loso import _prepared

    import sthinge as st

    st.settings.verbosity = 1
    cache = st.settings.cachedir / "bench"
    cache.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.environ["STHINGE_DATA_DIR"]) / "her2st" if os.environ.get("STHINGE_DATA_DIR") else None
    table = _prepared(cache, data_dir)
    from sthinge.tl._backbone import default_backbone

    args.runs[0].parent.mkdir(parents=True, exist_ok=True)
    run(args, table, default_backbone(), args.runs[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
