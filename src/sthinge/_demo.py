"""The end-to-end demo behind ``sthinge demo``: load -> genes -> embed -> fit -> predict -> evaluate -> report."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._logging import logg

HER2ST_C = ["C2", "C3", "C4", "C5", "C6"]


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


def _markdown_table(df: pd.DataFrame, floatfmt: str = ".3f") -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join([df.index.name or ""] + cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for idx, row in df.iterrows():
        cells = [format(v, floatfmt) if isinstance(v, float | np.floating) else str(v) for v in row.to_numpy()]
        lines.append("| " + " | ".join([str(idx)] + cells) + " |")
    return "\n".join(lines)


def run_demo(
    *,
    synthetic: bool = False,
    data_path: str | None = None,
    out: str | Path = "sthinge-report",
    held_out: str | None = None,
    max_epochs: int = 30,
    n_samples: int = 4,
    n_steps: int | None = None,
    seed: int = 0,
    say: Callable[[str], None] = logg.info,
) -> dict[str, Any]:
    """Run one leave-one-section-out fold of HINGE and ridge side by side and write a report folder.

    Returns a dict with the metrics table, the report path and the timings.
    """
    import matplotlib

    matplotlib.use("Agg")
    import sthinge as st
    from sthinge._utils import _atomic_path
    from sthinge.tl._pretrain import default_backbone, pretrain_backbone

    clock = _Clock(say)
    sections = [f"S{i + 1}" for i in range(4)] if synthetic else list(HER2ST_C)
    held_out = held_out or sections[0]
    if held_out not in sections:
        raise ValueError(f"`held_out` {held_out!r} is not one of the sections {sections}.")
    if synthetic:
        sdata = st.datasets.synthetic(n_sections=len(sections), n_spots=144, n_genes=60, seed=seed)
    else:
        sdata = st.datasets.her2st(sections, path=data_path)
    train = [s for s in sections if s != held_out]
    clock(f"loaded {len(sections)} sections; held out {held_out}, training on {', '.join(train)}")

    st.pp.normalize(sdata)
    st.pp.select_genes(sdata, train_sections=train, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    n_genes = len(table.uns[K.GENES_KEY])
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

    model = st.tl.fit(sdata, backbone=backbone, embedding_key=emb_key, train_sections=train, max_epochs=max_epochs,
                      min_epochs=min(15, max_epochs), seed=seed)
    clock(f"HINGE trained ({len(model.history)} epochs)")
    st.tl.predict(sdata, model, sections=[held_out], n_samples=n_samples, n_steps=n_steps, seed=seed)
    clock(f"HINGE predicted {held_out} ({n_samples} samples per spot)")

    ridge = st.tl.fit_baseline(sdata, method="ridge", embedding_key=emb_key, train_sections=train, seed=seed)
    st.tl.predict_baseline(sdata, ridge, sections=[held_out], key_added="ridge")
    clock("ridge baseline fitted and predicted")

    rows = []
    for key, name in ((K.PRED_KEY, "HINGE"), ("ridge", "ridge")):
        for rank_by in ("variance", "pcc"):
            res = st.tl.evaluate(sdata, pred_key=key, rank_by=rank_by)
            res = res.assign(method=name, rank_by=rank_by)
            rows.append(res)
    metrics = pd.concat(rows).reset_index().rename(columns={"index": "section"})
    keep = [c for c in ("method", "rank_by", "section", "pcc50", "pcc50_n_genes", "pcc200", "pcc200_n_genes",
                        "mse", "mae", "ssim", "unc_spearman", "coverage90") if c in metrics]
    metrics = metrics[keep]
    clock("evaluated")

    out = Path(out)
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
        figs["spatial_ridge.png"] = st.pl.spatial(sdata, genes, keys=("truth", "ridge"), section=held_out,
                                                  return_fig=True)
        figs["coexpression.png"] = st.pl.coexpression(sdata, section=held_out, return_fig=True)
        figs["history.png"] = st.pl.history(model, return_fig=True)
        import matplotlib.pyplot as plt

        for name, fig in figs.items():
            fig.savefig(tmp / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        # predicted SpatialData (held-out spots, predictions and truth; images stay in the source data)
        from spatialdata import SpatialData

        shapes_key = table.uns[K.UNS_SECTIONS][held_out]["shapes"]
        truth = table[table.obs[K.SECTION_KEY] == held_out].copy()
        truth.uns["spatialdata_attrs"] = {**truth.uns["spatialdata_attrs"], "region": [shapes_key]}
        SpatialData(
            shapes={shapes_key: sdata.shapes[shapes_key]},
            tables={"truth": truth, K.PRED_KEY: sdata.tables[K.PRED_KEY], "ridge": sdata.tables["ridge"]},
        ).write(tmp / "predictions.zarr")
        clock_lines = "\n".join(f"| {what} | {sec:.1f} |" for what, sec in clock.steps)
        hinge50 = float(main.loc["HINGE", "pcc50"])
        ridge50 = float(main.loc["ridge", "pcc50"])
        (tmp / "metrics.md").write_text(_markdown_table(metrics.set_index("method")) + "\n")
        (tmp / "summary.md").write_text(
            f"# sthinge demo\n\nData: {'synthetic' if synthetic else 'Her2ST patient C'}; held-out section "
            f"**{held_out}**, trained on {', '.join(train)}; {n_genes} genes; he-stats embeddings; backbone "
            f"`{backbone}`.\n\n"
            f"**PCC-50 on {held_out}: HINGE {hinge50:.3f}, ridge {ridge50:.3f}** (genes ranked by variance of the "
            "truth; `metrics.md` also lists the top-50-by-PCC variant).\n\n"
            f"## Metrics\n\n{_markdown_table(main)}\n\n## Time\n\n| step | seconds |\n|---|---|\n{clock_lines}\n\n"
            "Figures: `spatial.png`, `spatial_ridge.png`, `coexpression.png`, `history.png`; predictions: "
            "`predictions.zarr`.\n"
        )
    total = time.perf_counter() - clock.start
    say(f"report written to {out} in {total:.1f} s: PCC-50 on {held_out}: HINGE {hinge50:.3f}, ridge {ridge50:.3f}")
    return {"metrics": metrics, "out": out, "seconds": total, "steps": clock.steps}
