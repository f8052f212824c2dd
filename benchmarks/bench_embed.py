"""Benchmarks of ``sthinge.pp.embed_histology``: throughput (tiles/s) and how learnable ``he-stats`` features are.

Run from the repository root::

    STHINGE_DATA_DIR=/path/to/data PYTHONPATH=src python benchmarks/bench_embed.py [--skip-ridge] [--skip-vit]

1. Throughput on CPU of ``he-stats`` and of ViT encoders (random weights; the speed does not depend on them).
2. Ridge regression from ``he-stats`` features to expression on Her2ST patient C, leave-one-section-out over
   C2–C6: HMHVG genes from the training folds, ln(1 + CP10k), ``RidgeCV``; Pearson r per gene across the spots
   of the held-out section; PCC-50 = mean r of the 50 most variable (truth) genes of the panel, and the
   top-50-by-r variant. Baseline: ridge on the mean colour (R, G, B) of the tile.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _pcc_per_gene(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    yc, pc = y - y.mean(0), p - p.mean(0)
    den = np.sqrt((yc**2).sum(0) * (pc**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (yc * pc).sum(0) / den
    return np.where(den > 0, r, 0.0)


def ridge_loso(sdata, features: dict[str, np.ndarray], *, n_top: int = 300, k: int = 50) -> dict[str, dict]:
    """Leave-one-section-out ridge regression; returns per feature set the mean PCC-k over folds."""
    import scipy.sparse as sp
    from sklearn.linear_model import RidgeCV
    from sklearn.preprocessing import StandardScaler

    import sthinge as st

    table = sdata.tables["table"]
    st.pp.normalize(sdata)
    sections = list(table.obs["section"].cat.categories)
    results = {name: {"pcc_var": [], "pcc_top": [], "n_genes": []} for name in features}
    for held in sections:
        train = [s for s in sections if s != held]
        panel_table = st.pp.select_genes(table, train_sections=train, n_top=n_top, copy=True)
        genes = panel_table.uns["sthinge_genes"]["genes"]
        cols = table.var_names.get_indexer(genes)
        y = table.layers["sthinge_log1p"][:, cols]
        y = y.toarray() if sp.issparse(y) else np.asarray(y)
        tr = table.obs["section"].isin(train).to_numpy()
        te = (table.obs["section"] == held).to_numpy()
        top_var = np.argsort(-y[te].var(0), kind="stable")[:k]
        for name, x in features.items():
            scaler = StandardScaler().fit(x[tr])
            model = RidgeCV(alphas=np.logspace(-2, 5, 15)).fit(scaler.transform(x[tr]), y[tr])
            r = _pcc_per_gene(y[te], model.predict(scaler.transform(x[te])))
            results[name]["pcc_var"].append(float(r[top_var].mean()))
            results[name]["pcc_top"].append(float(np.sort(r)[::-1][:k].mean()))
            results[name]["n_genes"].append(len(genes))
    return {
        name: {
            "sections": sections,
            **v,
            "mean_pcc_var": float(np.mean(v["pcc_var"])),
            "mean_pcc_top": float(np.mean(v["pcc_top"])),
        }
        for name, v in results.items()
    }


def throughput(sdata, encoder, *, n_tiles: int, batch_size: int, weights=None) -> float:
    """Tiles per second of ``embed_histology`` on the first ``n_tiles`` spots of the first section (CPU)."""
    from spatialdata import SpatialData
    from spatialdata.models import TableModel

    import sthinge as st

    table = sdata.tables["table"]
    first = table.obs["section"].cat.categories[0]
    sub = table[np.flatnonzero(table.obs["section"] == first)[:n_tiles]].copy()
    n_tiles = sub.n_obs
    sub.obs["region"] = sub.obs["region"].cat.remove_unused_categories()
    del sub.uns["spatialdata_attrs"]
    sub = TableModel.parse(sub, region=f"{first}_spots", region_key="region", instance_key="spot_id")
    shapes = {f"{first}_spots": sdata.shapes[f"{first}_spots"]}
    small = SpatialData(images={f"{first}_image": sdata.images[f"{first}_image"]}, shapes=shapes, tables={"table": sub})
    st.pp.embed_histology(
        small, encoder=encoder, weights=weights, device="cpu", batch_size=batch_size, num_workers=1, key_added="bench"
    )  # warm-up (model build, first kernels)
    t0 = time.perf_counter()
    st.pp.embed_histology(
        small,
        encoder=encoder,
        weights=weights,
        device="cpu",
        batch_size=batch_size,
        num_workers=1,
        key_added="bench",
        overwrite=True,
    )
    return n_tiles / (time.perf_counter() - t0)


def main() -> None:
    import warnings

    import torch

    import sthinge as st

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-ridge", action="store_true")
    parser.add_argument("--skip-vit", action="store_true")
    parser.add_argument("--sections", default="C2,C3,C4,C5,C6")
    args = parser.parse_args()
    st.settings.verbosity = 1
    print(f"torch threads: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    sdata = st.datasets.her2st(args.sections.split(","))
    print(f"loaded Her2ST {args.sections} in {time.perf_counter() - t0:.1f} s")

    print(f"he-stats: {throughput(sdata, 'he-stats', n_tiles=187, batch_size=64):.1f} tiles/s (CPU)")
    if not args.skip_vit:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in ("vit_base_patch16_224", "vit_large_patch16_224"):
                rate = throughput(sdata, name, n_tiles=16, batch_size=8, weights="random")
                print(f"{name} (random weights): {rate:.2f} tiles/s (CPU)")

    if not args.skip_ridge:
        t0 = time.perf_counter()
        st.pp.embed_histology(sdata, encoder="he-stats", num_workers=1)
        print(f"he-stats on {sdata.tables['table'].n_obs} spots: {time.perf_counter() - t0:.1f} s")
        table = sdata.tables["table"]
        x = table.obsm["X_he-stats"]
        names = table.uns["X_he-stats"]["feature_names"]
        colour = x[:, [names.index(f"{c}_mean_disc") for c in "RGB"]]
        res = ridge_loso(sdata, {"he-stats": x, "colour-mean": colour})
        for name, r in res.items():
            per = ", ".join(f"{s} {v:.3f}" for s, v in zip(r["sections"], r["pcc_var"]))
            print(
                f"ridge {name:12s} PCC-50 (top var) {r['mean_pcc_var']:.3f} [{per}]; "
                f"PCC-50 (top r) {r['mean_pcc_top']:.3f}; panel sizes {r['n_genes']}"
            )


if __name__ == "__main__":
    main()
