"""The end-to-end demo behind ``sthinge demo``: load -> genes -> embed -> fit -> predict -> evaluate -> report."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _write_spatialdata

HER2ST_C = ["C2", "C3", "C4", "C5", "C6"]
SYNTHETIC_SECTIONS = ["S1", "S2", "S3", "S4"]
REPORT_FILES = (
    "summary.md",
    "metrics.md",
    "metrics.csv",
    "spatial.png",
    "spatial_ridge.png",
    "coexpression.png",
    "coexpression_sample.png",
    "calibration.png",
    "history.png",
    "predictions.zarr",
)
"""What a report folder holds: ``overwrite`` replaces a folder holding nothing else."""


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """The options of the demo: the keyword arguments of :func:`run_demo` and :func:`check_demo_args`, the options
    of ``sthinge demo`` (named in :data:`CLI_NAMES`).

    Attributes
    ----------
    synthetic
        Use generated data (no files or network needed) instead of Her2ST patient C.
    data_path
        Existing folder holding the Her2ST files (default: STHINGE_DATA_DIR, the cache, or a download).
    out
        Report folder to write: new or empty, or with ``overwrite`` an earlier report folder.
    overwrite
        Replace an earlier report in ``out`` (a folder holding only :data:`REPORT_FILES`).
    held_out
        Section to hold out (default: the first).
    max_epochs
        Maximum training epochs, >= 1.
    n_samples
        Samples per spot, >= 1.
    n_steps
        Sampler step budget K, 1 <= K <= T (the model's number of diffusion steps); default T.
    seed
        Random seed, >= 0.
    """

    synthetic: bool = False
    data_path: str | os.PathLike | None = None
    out: str | os.PathLike = "sthinge-report"
    overwrite: bool = False
    held_out: str | None = None
    max_epochs: int = 30
    n_samples: int = 4
    n_steps: int | None = None
    seed: int = 0


_PYTHON_NAMES = {
    **{f.name: f.name for f in fields(DemoOptions)},
    "synthetic": "synthetic=True",
    "overwrite": "overwrite=True",
}
"""How errors of :func:`check_demo_args` name the arguments of :func:`run_demo`."""

CLI_NAMES = {
    "synthetic": "--synthetic",
    "data_path": "--data",
    "out": "--out",
    "overwrite": "--overwrite",
    "held_out": "--held-out",
    "max_epochs": "--epochs",
    "n_samples": "--samples",
    "n_steps": "--steps",
    "seed": "--seed",
}
"""How errors of :func:`check_demo_args` name the options of ``sthinge demo``."""


def _demo_sections(synthetic: bool) -> list[str]:
    return list(SYNTHETIC_SECTIONS) if synthetic else list(HER2ST_C)


def _is_within(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` is ``outer`` or lies inside it (both resolved)."""
    try:
        inner, outer = inner.resolve(), outer.resolve()
    except OSError:  # pragma: no cover - unresolvable paths cannot be the same folder
        return False
    return inner == outer or outer in inner.parents


def check_demo_args(names: dict[str, str] | None = None, **options: Any) -> dict[str, Any]:
    """Check every option of :func:`run_demo` before any work (no data is read, nothing is trained or written).

    ``options`` are the fields of :class:`DemoOptions` by name (the others take its defaults; an unknown name is a
    ``TypeError``). ``names`` maps option names to the names errors use (default: the Python argument names; the
    command line passes :data:`CLI_NAMES`, so errors name ``--samples``, ``--out``, ...). Raises ``TypeError``/
    ``ValueError``/``FileNotFoundError``/``FileExistsError``/``NotADirectoryError``/``PermissionError``; returns the
    checked values (``held_out`` resolved, ``out`` as a :class:`~pathlib.Path`, ``data_root``: the folder holding
    the Her2ST files when found locally, else ``None``: :func:`run_demo` then looks in the cache and downloads).
    """
    from sthinge._settings import settings
    from sthinge._utils import _check_int, _check_output_path
    from sthinge.datasets._her2st import _candidates, _files_for, _has_files
    from sthinge.models import HingeConfig

    n = {**_PYTHON_NAMES, **(names or {})}
    o = DemoOptions(**options)
    synthetic, data_path, out, overwrite, held_out = o.synthetic, o.data_path, o.out, o.overwrite, o.held_out
    if not isinstance(synthetic, bool):
        raise TypeError(f"`{n['synthetic']}` must be True or False, got {synthetic!r}.")
    sections = _demo_sections(synthetic)
    if held_out is None:
        held_out = sections[0]
    if not isinstance(held_out, str) or held_out not in sections:
        where = " with `" + n["synthetic"] + "`" if synthetic else ""
        raise ValueError(f"`{n['held_out']}` {held_out!r} is not one of the sections{where}: {sections}.")
    max_epochs = _check_int(n["max_epochs"], o.max_epochs, low=1)
    n_samples = _check_int(n["n_samples"], o.n_samples, low=1)
    n_steps = o.n_steps
    if n_steps is not None:  # the sampler's step budget K <= T, the model's number of diffusion steps
        n_steps = _check_int(n["n_steps"], n_steps, low=1, high=HingeConfig.n_steps)
    seed = _check_int(n["seed"], o.seed, low=0, high=2**32 - 1)  # numpy's and Lightning's seed range

    data_root = None
    if data_path is not None:
        if synthetic:
            raise ValueError(
                f"`{n['data_path']}` and `{n['synthetic']}` exclude each other: synthetic data reads no files."
            )
        if not isinstance(data_path, str | os.PathLike):
            raise TypeError(f"`{n['data_path']}` must be a folder path, got {type(data_path).__name__}.")
        root = Path(data_path).expanduser()
        if not root.exists():
            raise FileNotFoundError(
                f"`{n['data_path']}` {str(root)!r} does not exist; give the folder holding the "
                f"Her2ST files, or use `{n['synthetic']}` to run offline."
            )
        if not root.is_dir():
            raise NotADirectoryError(f"`{n['data_path']}` {str(root)!r} is a file, not a folder.")
        data_root = next((c for c in _candidates(root) if _has_files(c, sections)), None)
        if data_root is None:
            missing = [f for s in sections for f in _files_for(s) if not (root / f).is_file()]
            raise FileNotFoundError(
                f"`{n['data_path']}` {str(root)!r} does not hold the Her2ST files of patient C {sections} (missing "
                f"e.g. {missing[:3]}); expected counts/<S>.tsv.gz, spots/<S>_selection.tsv, images/<S>.jpg in it or "
                f"in its her2st/ folder. Use `{n['synthetic']}` to run offline."
            )
    elif not synthetic:
        roots = _candidates(settings.datadir) if settings.datadir is not None else []
        roots.append(settings.cachedir / "her2st")
        data_root = next((c for c in roots if _has_files(c, sections)), None)

    out = _check_output_path(n["out"], out, overwrite=overwrite, kind="folder", flag=n["overwrite"])
    if out.is_dir():  # empty, or (with `overwrite`) not: the report replaces the whole folder
        protected = {
            "the current folder": Path.cwd(),
            "your home folder": Path.home(),
            "the dataset cache": settings.cachedir,
        }
        if data_path is not None:
            protected["the data folder"] = Path(data_path).expanduser()
        if settings.datadir is not None:
            protected["STHINGE_DATA_DIR"] = settings.datadir
        for what, folder in protected.items():
            if _is_within(folder, out):
                raise ValueError(
                    f"`{n['out']}` {str(out)!r} is or contains {what} ({str(folder)!r}); the report "
                    "replaces the whole folder, so give it a folder of its own."
                )
        foreign = sorted(p.name for p in out.iterdir() if p.name not in REPORT_FILES)
        if foreign:
            raise FileExistsError(
                f"`{n['out']}` {str(out)!r} holds files that are not part of a demo report (e.g. "
                f"{foreign[:3]}); `{n['overwrite']}` replaces only an earlier report folder, never "
                "other files. Choose another path."
            )
    return {
        "synthetic": synthetic,
        "sections": sections,
        "held_out": held_out,
        "max_epochs": max_epochs,
        "n_samples": n_samples,
        "n_steps": n_steps,
        "seed": seed,
        "out": out,
        "overwrite": overwrite,
        "data_root": data_root,
        "names": n,
    }


class _Clock:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.steps: list[tuple[str, float]] = []
        self.say = say

    def __call__(self, what: str) -> None:
        now = time.perf_counter()
        self.steps.append((what, now - self.last))
        self.say(f"[{now - self.start:6.1f} s] {what} ({now - self.last:.1f} s)")
        self.last = now


def _report_image(sdata, table, section: str, max_side: int = 4000) -> dict[str, Any]:
    """The section's H&E for the report: the largest pyramid level with sides of at most ``max_side`` pixels, as
    one image scaled back onto the spots' full-resolution pixels (``{}`` without an image)."""
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Scale

    name = table.uns[K.UNS_SECTIONS].get(section, {}).get("image") or f"{section}{K.IMAGE_SUFFIX}"
    if name not in sdata.images:
        return {}
    element = sdata.images[name]
    if hasattr(element, "children"):  # multiscale: its levels, largest first
        levels = sorted(
            (next(iter(node.ds.data_vars.values())) for node in element.children.values()),
            key=lambda a: -a.sizes["y"] * a.sizes["x"],
        )
    else:
        levels = [element]
    full = levels[0]
    level = next((a for a in levels if max(a.sizes["y"], a.sizes["x"]) <= max_side), levels[-1])
    if level is full and not hasattr(element, "children"):
        return {name: element}
    scale = [full.sizes["y"] / level.sizes["y"], full.sizes["x"] / level.sizes["x"]]
    return {
        name: Image2DModel.parse(
            level.data,
            dims=("c", "y", "x"),
            c_coords=list(level.coords["c"].values),
            transformations={section: Scale(scale, axes=("y", "x"))},
        )
    }


def _pcc_note(metrics: pd.DataFrame, n_genes: int, section: str) -> str:
    """A line for the summary where PCC-k is NaN: fewer than k genes of the panel have a PCC (e.g. PCC-200 of a
    116-gene panel)."""
    ks = [int(c[3:]) for c in ("pcc50", "pcc200") if c in metrics and metrics[c].isna().all()]
    if not ks:
        return ""
    return (
        f"\n{' and '.join(f'PCC-{k}' for k in ks)}: NaN, since fewer than {min(ks)} of the panel's {n_genes} "
        f"genes have a PCC on {section}; `pcc` is the mean PCC over all genes that have one.\n"
    )


def _markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float | np.floating) else str(v) for v in row.to_numpy()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def run_demo(
    *, say: Callable[[str], None] = logg.info, _names: dict[str, str] | None = None, **options: Any
) -> dict[str, Any]:
    """Run one leave-one-section-out fold of HINGE and ridge side by side and write a report folder.

    ``options`` are the fields of :class:`DemoOptions` by name (``synthetic``, ``data_path``, ``out``,
    ``overwrite``, ``held_out``, ``max_epochs``, ``n_samples``, ``n_steps``, ``seed``); ``say`` receives the
    progress messages. Every option is checked first (:func:`check_demo_args`), before any data is read. ``out``
    must be a new or empty folder, or, with ``overwrite=True``, an earlier report folder (holding only
    :data:`REPORT_FILES`) to replace; an existing file or a folder with other files is never replaced. The report is
    written beside ``out`` and moved into place only when complete.

    Returns a dict with the metrics table, the report path and the timings.
    """
    checked = check_demo_args(names=_names, **options)
    if not callable(say):
        raise TypeError(f"`say` must be a callable taking a message, got {type(say).__name__}.")
    synthetic, sections, held_out, out, names = (
        checked[k] for k in ("synthetic", "sections", "held_out", "out", "names")
    )
    max_epochs, n_samples, n_steps, seed = (checked[k] for k in ("max_epochs", "n_samples", "n_steps", "seed"))
    import matplotlib

    matplotlib.use("Agg")
    import sthinge as st
    from sthinge._utils import _atomic_path
    from sthinge.tl._backbone import default_backbone
    from sthinge.tl._pretrain import pretrain_backbone

    clock = _Clock(say)
    if synthetic:
        sdata = st.datasets.synthetic(n_sections=len(sections), n_spots=144, n_genes=60, seed=seed)
    else:
        root = checked["data_root"]
        if root is None:  # not in STHINGE_DATA_DIR nor the cache: download into the cache
            from sthinge._settings import settings
            from sthinge.datasets._her2st import _locate

            try:
                root = _locate(sections, None)
            except FileNotFoundError as err:
                cause = err.__cause__ or err
                raise FileNotFoundError(
                    f"The Her2ST files of patient C {sections} are not in STHINGE_DATA_DIR "
                    f"({settings.datadir or 'not set'}) nor in the cache ({settings.cachedir / 'her2st'}), and the "
                    f"download failed ({type(cause).__name__}: {cause}). Pass the folder holding them with "
                    f"`{names['data_path']}`, set STHINGE_DATA_DIR, or use `{names['synthetic']}` to run offline."
                ) from err
        sdata = st.datasets.her2st(sections, path=root)
    train = [s for s in sections if s != held_out]
    clock(f"loaded {len(sections)} sections; held out {held_out}, training on {', '.join(train)}")

    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, train_sections=train, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    n_genes = len(table.uns[K.GENES_KEY]["genes"])
    clock(f"normalised; gene panel of {n_genes} genes from the training sections")

    st.pp.embed_histology(sdata, encoder="he-stats")
    emb_key = K.embedding_key("he-stats")
    clock(f"he-stats embeddings ({table.obsm[emb_key].shape[1]} features per spot)")

    if synthetic:
        train_expr = sdata.tables[K.TABLE_KEY]
        train_expr = train_expr[train_expr.obs[K.SECTION_KEY].isin(train)].copy()
        backbone = pretrain_backbone(train_expr, preset="tiny", max_epochs=8, seed=seed).sthinge_path
        clock("pre-trained a tiny backbone on the synthetic training sections' expression")
    else:
        backbone = default_backbone()
        clock(f"backbone: {backbone}")

    model = st.tl.fit(
        sdata,
        backbone=backbone,
        embedding_key=emb_key,
        train_sections=train,
        max_epochs=max_epochs,
        min_epochs=min(15, max_epochs),
        seed=seed,
        calibration_samples=n_samples,  # calibrated for the sampling settings it predicts with
        calibration_steps=n_steps,
    )
    clock(f"HINGE trained ({len(model.history)} epochs)")
    st.tl.predict(
        sdata,
        model,
        sections=[held_out],
        n_samples=n_samples,
        n_steps=n_steps,
        seed=seed,
        return_samples=True,
        levels=(0.5, 0.9),
    )
    clock(
        f"HINGE predicted {held_out} ({n_samples} samples per spot; intervals calibrated on "
        f"{model.calibration.n if model.calibration is not None else 0} validation spots)"
    )
    # one sample as a prediction of its own: the gene-gene structure of a draw, not of the average of draws
    sample_table = sdata.tables[K.PRED_KEY].copy()
    sample_table.X = np.asarray(sample_table.obsm[f"{K.PRED_KEY}{K.SAMPLES_SUFFIX}"][:, 0, :])
    sample_table.uns["sthinge_sample"] = sample_table.uns[K.PRED_KEY]
    sdata.tables["sthinge_sample"] = sample_table

    ridge = st.tl.fit_baseline(sdata, method="ridge", embedding_key=emb_key, train_sections=train, seed=seed)
    st.tl.predict_baseline(sdata, ridge, sections=[held_out], key_added="ridge", levels=(0.5, 0.9))
    clock("ridge baseline fitted and predicted")

    rows = []
    for key, name in ((K.PRED_KEY, "HINGE"), ("ridge", "ridge")):
        for rank_by in ("variance", "pcc"):
            res = st.tl.evaluate(sdata, pred_key=key, rank_by=rank_by)
            res = res.assign(method=name, rank_by=rank_by)
            rows.append(res)
    metrics = pd.concat(rows).reset_index().rename(columns={"index": "section"})
    keep = [
        c
        for c in (
            "method",
            "rank_by",
            "section",
            "pcc50",
            "pcc50_n_genes",
            "pcc200",
            "pcc200_n_genes",
            "pcc",
            "pcc_n_genes",
            "mse",
            "mae",
            "ssim",
            "coverage50",
            "coverage90",
            "width90",
            "crps",
            "unc_spearman",
        )
        if c in metrics
    ]
    metrics = metrics[keep]
    clock("evaluated")

    with _atomic_path(out) as tmp:
        tmp.mkdir()
        metrics.to_csv(tmp / "metrics.csv", index=False)
        main = metrics[metrics["rank_by"] == "variance"].set_index("method")
        figs = {}
        from sthinge.tl._data import _expression

        held_rows = np.flatnonzero(table.obs[K.SECTION_KEY].astype(str).to_numpy() == held_out)
        truth_x, _ = _expression(table, model.layer, model.genes, held_rows, check_raw=False)
        genes = [model.genes[i] for i in np.argsort(-truth_x.var(0))[:3]]  # the most variable genes
        figs["spatial.png"] = st.pl.spatial(sdata, genes, section=held_out, return_fig=True)
        figs["spatial_ridge.png"] = st.pl.spatial(
            sdata, genes, keys=("truth", "ridge"), section=held_out, return_fig=True
        )
        figs["coexpression.png"] = st.pl.coexpression(sdata, section=held_out, return_fig=True)
        figs["coexpression_sample.png"] = st.pl.coexpression(
            sdata, pred_key="sthinge_sample", section=held_out, return_fig=True
        )
        figs["calibration.png"] = st.pl.calibration(
            {
                name: metrics[(metrics["method"] == name) & (metrics["rank_by"] == "variance")]
                for name in ("HINGE", "ridge")
            },
            levels=(0.5, 0.9),
            return_fig=True,
        )
        figs["history.png"] = st.pl.history(model, val_metric="mse", return_fig=True)  # tl.fit's default above
        import matplotlib.pyplot as plt

        for name, fig in figs.items():
            fig.savefig(tmp / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        # predicted SpatialData: the held-out spots, their truth, both predictions and the H&E (downscaled), so
        # `st.pl.spatial(sd.read_zarr(...), gene)` draws them over the image and `st.tl.evaluate` scores them
        from spatialdata import SpatialData

        shapes_key = table.uns[K.UNS_SECTIONS][held_out]["shapes"]
        truth = table[table.obs[K.SECTION_KEY] == held_out].copy()
        truth.uns["spatialdata_attrs"] = {**truth.uns["spatialdata_attrs"], "region": [shapes_key]}
        preds = {}
        for key in (K.PRED_KEY, "ridge"):  # each names its truth: the table "truth" of this file
            preds[key] = sdata.tables[key].copy()
            preds[key].uns[key] = {**preds[key].uns[key], "source_table": "truth"}
        predictions = SpatialData(
            images=_report_image(sdata, table, held_out),
            shapes={shapes_key: sdata.shapes[shapes_key]},
            tables={"truth": truth, **preds},
        )
        _write_spatialdata(predictions, tmp / "predictions.zarr")
        clock_lines = "\n".join(f"| {what} | {sec:.1f} |" for what, sec in clock.steps)
        hinge50 = float(main.loc["HINGE", "pcc50"])
        ridge50 = float(main.loc["ridge", "pcc50"])
        co = {
            key: st.tl.coexpression(sdata, pred_key=key, section=held_out).similarity
            for key in (K.PRED_KEY, "sthinge_sample", "ridge")
        }
        (tmp / "metrics.md").write_text(_markdown_table(metrics.set_index("method")) + "\n")
        (tmp / "summary.md").write_text(
            f"# sthinge demo\n\nData: {'synthetic' if synthetic else 'Her2ST patient C'}; held-out section "
            f"**{held_out}**, trained on {', '.join(train)}; {n_genes} genes; he-stats embeddings; backbone "
            f"`{backbone}`.\n\n"
            f"**PCC-50 on {held_out}: HINGE {hinge50:.3f}, ridge {ridge50:.3f}** (genes ranked by variance of the "
            "truth; `metrics.md` also lists the top-50-by-PCC variant).\n\n"
            f"**Coverage of the 90 % intervals on {held_out}: HINGE {main.loc['HINGE', 'coverage90']:.3f}, ridge "
            f"{main.loc['ridge', 'coverage90']:.3f}; of the 50 % intervals: HINGE "
            f"{main.loc['HINGE', 'coverage50']:.3f}, ridge {main.loc['ridge', 'coverage50']:.3f}** (the share of "
            "measured values inside; split-conformal intervals, calibrated on spots training did not use; "
            "`calibration.png`). CRPS (lower is better): HINGE "
            f"{main.loc['HINGE', 'crps']:.3f}, ridge {main.loc['ridge', 'crps']:.3f}.\n\n"
            f"Co-expression similarity to the truth: HINGE mean {co[K.PRED_KEY]:.3f}, one HINGE sample "
            f"{co['sthinge_sample']:.3f}, ridge {co['ridge']:.3f} (`coexpression.png`, "
            "`coexpression_sample.png`).\n\n"
            f"## Metrics\n\n{_markdown_table(main)}\n\n## Time\n\n| step | seconds |\n|---|---|\n{clock_lines}\n\n"
            "Figures: `spatial.png`, `spatial_ridge.png`, `coexpression.png`, `coexpression_sample.png`, "
            "`calibration.png`, `history.png`; predictions: "
            "`predictions.zarr`.\n"
            f"{_pcc_note(metrics, n_genes, held_out)}"
            "\n## Use the predictions\n\n`predictions.zarr` holds the held-out spots, their measured expression "
            "(table `truth`), the predictions (tables `sthinge` and `ridge`: mean in `X`, SD in "
            "`layers['sthinge_std']`, over HINGE's samples, and `layers['ridge_std']`, one value per gene: the root "
            "mean square of ridge's out-of-fold residuals on the training sections) and the section's H&E (at most "
            "4000 pixels a side):\n\n```python\nimport spatialdata as sd\n"
            f'import sthinge as st\n\nsdata = sd.read_zarr("predictions.zarr")\nst.pl.spatial(sdata, '
            f'"{genes[0]}")  # measured, predicted mean and SD over the H&E\nst.tl.evaluate(sdata)\n'
            f"# squidpy: the tables hold no image, so draw the spots alone\n# sq.pl.spatial_scatter(sdata."
            f'tables["sthinge"], color="{genes[0]}", shape=None)\n```\n'
        )
    total = time.perf_counter() - clock.start
    say(f"report written to {out} in {total:.1f} s: PCC-50 on {held_out}: HINGE {hinge50:.3f}, ridge {ridge50:.3f}")
    return {"metrics": metrics, "out": out, "seconds": total, "steps": clock.steps}
