"""``tl.cross_validate``: leave-one-section-out evaluation of HINGE or a baseline on identical inputs."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_choice, _check_int, _check_no_repeats, _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

_METHODS = ("hinge", "ridge", "mlp", "knn")
_CV_KEY = "sthinge_cv"
# arguments cross_validate sets itself in each fold
_RESERVED_FIT = ("embedding_key", "train_sections", "section_key", "layer", "genes_key", "table_key", "method")
_RESERVED_PREDICT = ("sections", "section_key", "key_added", "inplace", "table_key", "overwrite")


@dataclass(eq=False)
class CrossValidationDetails:
    """What :func:`cross_validate` keeps beside its summary table, in ``df.attrs["details"]``.

    Attributes
    ----------
    per_gene
        Per-gene metrics of every fold (columns ``method``, ``fold``, ``section``, ``gene``, ``pcc``, ...).
    panels
        The gene panel of each fold (selected on its training sections).
    histories
        For ``method="hinge"``, the training history of each fold's model (:attr:`HingeModel.history`: one dict per
        epoch with ``epoch``, ``train_loss``, ``val``, ``lr``); empty for the baselines.
    """

    per_gene: pd.DataFrame
    panels: dict[str, list[str]] = field(default_factory=dict)
    histories: dict[str, list[dict[str, float]]] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"CrossValidationDetails(per_gene={self.per_gene.shape[0]} rows, folds={list(self.panels)})"


def _folds(folds: Any, sections: list[str]) -> list[tuple[str, list[str]]]:
    """``[(fold name, held-out sections)]``."""
    if isinstance(folds, str):
        if folds != "leave-one-section-out":
            raise ValueError(f"`folds` must be 'leave-one-section-out' or a list of held-out sections, got {folds!r}.")
        return [(s, [s]) for s in sections]
    if not isinstance(folds, Sequence) or not len(folds):
        raise TypeError(f"`folds` must be 'leave-one-section-out' or a non-empty list of sections, got {folds!r}.")
    out = []
    for f in folds:
        if not isinstance(f, str) and not isinstance(f, Sequence):
            raise TypeError(f"`folds` entries must be a section or a list of sections, got {f!r}.")
        held = [str(f)] if isinstance(f, str) else [str(s) for s in f]
        if not held:
            raise ValueError("`folds` holds an empty fold; every fold holds out at least one section.")
        _check_no_repeats("folds", held, "held-out section")
        unknown = [s for s in held if s not in sections]
        if unknown:
            raise ValueError(f"`folds`: held-out section(s) {unknown} not among the sections {sections}.")
        if len(held) == len(sections):
            raise ValueError(f"`folds`: fold {held} holds out every section; nothing is left to train on.")
        out.append(("+".join(held), held))
    # a section held out twice would be fitted and scored twice, and counted twice in every summary
    _check_no_repeats("folds", [s for _, held in out for s in held], "held-out section")
    return out


@_doc
def cross_validate(
    data: AnnData | SpatialData,
    *,
    method: Literal["hinge", "ridge", "mlp", "knn"] = "hinge",
    folds: str | Sequence[str | Sequence[str]] = "leave-one-section-out",
    sections: Sequence[str] | None = None,
    embedding_key: str = K.embedding_key(K.DEFAULT_ENCODER),
    n_top: int = 300,
    vocab: str | Sequence[str] | None = "cellfm-80m",
    layer: str | None = None,
    fit_kwargs: dict | None = None,
    predict_kwargs: dict | None = None,
    metrics: Sequence[str] = ("pcc50", "pcc", "mse", "mae", "ssim"),
    rank_by: Literal["variance", "pcc"] = "variance",
    section_key: str = K.SECTION_KEY,
    seed: int = 0,
    table_key: str | None = None,
) -> pd.DataFrame:
    """Cross-validate a method over sections: per fold, choose genes, fit, predict the held-out section, evaluate.

    Each fold works on a private copy of the table, so ``data`` is never modified. In each fold the gene panel is
    selected from the **training sections only** (:func:`sthinge.pp.select_genes` with ``train_sections``; HMHVG,
    ``n_top``, ``vocab``), the model is fitted on the training sections (:func:`sthinge.tl.fit` for ``"hinge"``,
    :func:`sthinge.tl.fit_baseline` otherwise), the held-out sections are predicted and scored with
    :func:`sthinge.tl.evaluate`. Running it once per method with the same arguments gives results on identical
    folds, panels and embeddings, ready for :func:`sthinge.tl.compare` and :func:`sthinge.pl.metrics`.

    The paper's protocols: leave-one-section-out over all sections (cSCC, Kidney), or for Her2ST
    ``folds=["A1", "B1", ..., "H1"]`` (every other section trains).

    Parameters
    ----------
    data
        SpatialData or AnnData with normalised expression (:func:`sthinge.pp.normalize`) and the embedding.
    method
        ``"hinge"``, ``"ridge"``, ``"mlp"`` or ``"knn"``.
    folds
        ``"leave-one-section-out"`` (each of ``sections`` is held out once), or a list of held-out sections (an
        entry may be a list of sections held out together).
    sections
        Sections taking part (training and test); default all.
    %(embedding_key)s
    n_top
        ``n_top`` of :func:`sthinge.pp.select_genes` (the panel is the top-``n_top`` by mean AND by variance).
    vocab
        Vocabulary of :func:`sthinge.pp.select_genes` (for HINGE it must match the backbone).
    %(layer_lognorm)s
        It is used for gene selection, fitting and as the truth.
    fit_kwargs
        Extra arguments of :func:`sthinge.tl.fit` or :func:`sthinge.tl.fit_baseline` (e.g. ``backbone``,
        ``weights``, ``max_epochs``; ``alphas``).
    predict_kwargs
        Extra arguments of :func:`sthinge.tl.predict` (e.g. ``n_steps``, ``n_samples``, ``return_samples``).
    metrics
        Metrics of :func:`sthinge.tl.evaluate`.
    rank_by
        PCC-k gene selection of :func:`sthinge.tl.evaluate`.
    %(section_key)s
    seed
        Random seed of fitting and prediction (the same in every fold).
    %(table_key)s

    Returns
    -------
    A DataFrame with one row per held-out section (index = section; one row per fold for leave-one-section-out):
    ``method``, ``fold``, ``n_train_sections``, ``n_panel`` (genes in the fold's panel), ``fit_seconds``,
    ``predict_seconds`` and the columns of :func:`sthinge.tl.evaluate`. ``df.attrs["details"]`` is a
    :class:`CrossValidationDetails` with ``per_gene`` (the per-gene table of every fold, with ``method`` and
    ``fold`` columns) and ``panels`` (each fold's gene panel).

    Examples
    --------
    >>> hinge = st.tl.cross_validate(sdata, method="hinge", embedding_key="X_uni", fit_kwargs=dict(weights=ckpt))
    ... # doctest: +SKIP
    >>> ridge = st.tl.cross_validate(sdata, method="ridge", embedding_key="X_uni")  # doctest: +SKIP
    >>> st.pl.metrics(pd.concat([hinge, ridge]), metric="pcc50")  # doctest: +SKIP
    >>> per_gene = hinge.attrs["details"].per_gene  # doctest: +SKIP
    """
    from sthinge.pp._genes import select_genes
    from sthinge.tl._baselines import fit_baseline, predict_baseline
    from sthinge.tl._data import _panel
    from sthinge.tl._evaluate import _evaluate_tables, _parse_metrics

    # ---- validation before any work -----------------------------------------------------------------------
    _check_choice("method", method, _METHODS)
    _check_choice("rank_by", rank_by, ("variance", "pcc"))
    _parse_metrics(metrics)
    seed = _check_int("seed", seed, low=0)
    n_top = _check_int("n_top", n_top, low=1)
    fit_kwargs = dict(fit_kwargs or {})
    predict_kwargs = dict(predict_kwargs or {})
    for name, kw, reserved in (
        ("fit_kwargs", fit_kwargs, _RESERVED_FIT),
        ("predict_kwargs", predict_kwargs, _RESERVED_PREDICT),
    ):
        clash = sorted(set(kw) & set(reserved + ("seed",)))
        if clash:
            raise ValueError(f"`{name}` must not set {clash}: cross_validate sets them (use its own arguments).")
    if method != "hinge" and predict_kwargs:
        raise ValueError(f"`predict_kwargs` only apply to method='hinge'; got {sorted(predict_kwargs)} for {method!r}.")
    table, _ = _resolve_table(data, table_key)
    if section_key not in table.obs:
        raise KeyError(f"`section_key` {section_key!r} is not an obs column; cross-validation needs sections.")
    if embedding_key not in table.obsm:
        raise KeyError(f"`embedding_key` {embedding_key!r} not found in `obsm` (available: {list(table.obsm)}).")
    labels = table.obs[section_key].astype(str).to_numpy()
    present = [str(s) for s in pd.unique(labels)]
    if sections is None:
        use = present
    else:
        use = [str(s) for s in ([sections] if isinstance(sections, str) else sections)]
        _check_no_repeats("sections", use)
        unknown = [s for s in use if s not in present]
        if unknown:
            raise ValueError(f"`sections` {unknown} not found in obs[{section_key!r}]; available: {present}.")
    if len(use) < 2:
        raise ValueError(f"Cross-validation needs at least two sections; got {use}.")
    plan = _folds(folds, use)

    # ---- a private copy of the rows taking part -----------------------------------------------------------------
    work = table[np.isin(labels, use)].copy()
    for key in [k for k in work.obsm if k not in (embedding_key, K.SPATIAL_KEY)]:
        del work.obsm[key]

    rows, per_gene, panels, histories = [], [], {}, {}
    scoring = dict(by=section_key, metrics=metrics, rank_by=rank_by, section_key=section_key)  # the same every fold
    for name, held in plan:
        train = [s for s in use if s not in held]
        logg.info(f"cross_validate [{method}] fold {name!r}: train on {len(train)} section(s), test on {held}")
        select_genes(work, train_sections=train, n_top=n_top, vocab=vocab, layer=layer, section_key=section_key)
        panel = _panel(work, K.GENES_KEY)
        panels[name] = panel
        common = dict(
            embedding_key=embedding_key, layer=layer, train_sections=train, section_key=section_key, seed=seed
        )
        start = time.perf_counter()
        if method == "hinge":
            from sthinge.tl._fit import fit
            from sthinge.tl._predict import predict

            model = fit(work, **common, **fit_kwargs)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            predict(
                work,
                model,
                sections=held,
                section_key=section_key,
                key_added=_CV_KEY,
                seed=seed,
                overwrite=True,
                **predict_kwargs,
            )  # `work` is cross_validate's own copy
        else:
            model = fit_baseline(work, method=method, **common, **fit_kwargs)
            fit_s = time.perf_counter() - start
            start = time.perf_counter()
            predict_baseline(work, model, sections=held, section_key=section_key, key_added=_CV_KEY, overwrite=True)
        pred_s = time.perf_counter() - start
        summary, genes_df = _evaluate_tables(work, pred_key=_CV_KEY, truth_layer=layer, **scoring)
        for key in (_CV_KEY, f"{_CV_KEY}{K.STD_SUFFIX}"):
            work.obsm.pop(key, None)
        work.uns.pop(_CV_KEY, None)
        meta = pd.DataFrame(
            {
                "method": method,
                "fold": name,
                "n_train_sections": len(train),
                "n_panel": len(panel),
                "fit_seconds": fit_s,
                "predict_seconds": pred_s,
            },
            index=summary.index,
        )
        rows.append(pd.concat([meta, summary], axis=1))
        genes_df.insert(0, "fold", name)
        genes_df.insert(0, "method", method)
        per_gene.append(genes_df)
        if method == "hinge":
            histories[name] = [dict(h) for h in model.history]
        del model

    out = pd.concat(rows)
    out.index.name = section_key
    # a holder, not a DataFrame: pandas compares attrs when concatenating, which fails on DataFrame values
    out.attrs["details"] = CrossValidationDetails(
        per_gene=pd.concat(per_gene, ignore_index=True), panels=panels, histories=histories
    )
    out.attrs["rank_by"] = rank_by
    return out
