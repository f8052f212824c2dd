"""Regression baselines (ridge, MLP, kNN) from histology embeddings to the panel's log expression.

They read the same inputs as :func:`sthinge.tl.fit` (embedding in ``obsm``, panel from ``pp.select_genes``,
normalised layer) and write predictions in the same format as :func:`sthinge.tl.predict`, so that
:func:`sthinge.tl.evaluate` and ``sthinge.pl`` treat them exactly like HINGE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_choice, _check_float, _check_int, _removed_keywords, _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

METHODS = ("ridge", "mlp", "knn")
_DEFAULT_ALPHAS = tuple(float(a) for a in np.logspace(-2, 6, 17))
_DEFAULT_NEIGHBORS = (1, 2, 3, 5, 10, 20, 50)


@dataclass
class BaselineModel:
    """A fitted regression baseline: standardised embedding -> standardised log expression of the panel.

    Attributes
    ----------
    method
        ``"ridge"``, ``"mlp"`` or ``"knn"``.
    estimator
        The fitted scikit-learn estimator.
    genes
        The gene panel (var names), in output order.
    embedding_key
        ``obsm`` key of the embedding it reads.
    cond_mean, cond_std
        Standardisation of the embedding, learnt on the training spots.
    y_mean, y_std
        Standardisation of the targets, learnt on the training spots.
    layer
        The training layer (log-normalised expression).
    transform
        ``uns["sthinge_normalize"]`` of the training table.
    params
        Chosen hyper-parameters (``alpha`` per gene for ridge, ``n_neighbors`` for kNN, ``n_iter`` for the MLP).
    train_sections
        Sections it was trained on.
    history
        MLP only: per-epoch ``train_loss`` and ``val_score`` (R^2 of the early-stopping split).
    resid_std
        Per-gene predictive standard deviation (log expression units): the root mean square of held-out residuals
        on the training spots (see :func:`fit_baseline`); ``None`` for a model without one.
    std_scale
        Per-gene factor applied to ``resid_std`` (``None``: 1).
    calibration
        Split-conformal calibration of the intervals (:class:`sthinge.tl._conformal.Calibration`), from the same
        held-out residuals as ``resid_std``: the step HINGE gets from :func:`sthinge.tl.calibrate`.
    """

    method: str
    estimator: Any
    genes: list[str]
    embedding_key: str
    cond_mean: np.ndarray
    cond_std: np.ndarray
    y_mean: np.ndarray
    y_std: np.ndarray
    layer: str | None = None
    transform: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    train_sections: list[str] = field(default_factory=list)
    history: list[dict[str, float]] = field(default_factory=list)
    resid_std: np.ndarray | None = None
    std_scale: np.ndarray | None = None
    calibration: Any = None

    @property
    def n_genes(self) -> int:
        """Number of genes in the panel."""
        return len(self.genes)

    @property
    def cond_dim(self) -> int:
        """Width of the embedding the model expects."""
        return int(self.cond_mean.shape[0])

    def standardize(self, emb: np.ndarray) -> np.ndarray:
        """Standardise embeddings with the statistics of the training spots."""
        return ((np.asarray(emb, np.float32) - self.cond_mean) / self.cond_std).astype(np.float32)

    def predict_array(self, emb: np.ndarray) -> np.ndarray:
        """Predicted log expression (spots x genes, float32) for raw embeddings (spots x features)."""
        emb = np.asarray(emb, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[1] != self.cond_dim:
            raise ValueError(f"Expected embeddings of shape (n, {self.cond_dim}), got {emb.shape}.")
        out = np.asarray(self.estimator.predict(self.standardize(emb)), dtype=np.float64).reshape(len(emb), -1)
        return (out * self.y_std + self.y_mean).astype(np.float32)

    def predict_std_array(self, n_spots: int) -> np.ndarray | None:
        """Gaussian predictive std (spots x genes, float32): ``resid_std * std_scale`` for every spot, or ``None``."""
        if self.resid_std is None:
            return None
        std = np.asarray(self.resid_std, dtype=np.float64)
        if self.std_scale is not None:
            std = std * np.asarray(self.std_scale, dtype=np.float64)
        return np.broadcast_to(std.astype(np.float32), (int(n_spots), std.shape[0])).copy()

    def __repr__(self) -> str:
        return (
            f"BaselineModel(method={self.method!r}, genes={self.n_genes}, embedding={self.embedding_key!r} "
            f"({self.cond_dim}-d), params={ {k: v for k, v in self.params.items() if k != 'alpha'} })"
        )


def _standardize_stats(x: np.ndarray, tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    return mean.astype(np.float32), np.where(std > tol, std, 1.0).astype(np.float32)


_RESID_FOLDS = 5  # folds of the held-out residuals behind a baseline's predictive std


def _residual_folds(groups: np.ndarray, seed: int) -> list[np.ndarray]:
    """Held-out index sets over the training spots: whole sections when there are at least two, else random spots."""
    names = list(dict.fromkeys(groups.tolist()))
    n = len(groups)
    if len(names) >= 2:
        order = np.random.default_rng(seed).permutation(len(names))
        k = min(_RESID_FOLDS, len(names))
        return [np.flatnonzero(np.isin(groups, [names[j] for j in order[i::k]])) for i in range(k)]
    k = min(_RESID_FOLDS, n)
    perm = np.random.default_rng(seed).permutation(n)
    return [np.sort(perm[i::k]) for i in range(k)]


def _residual_std(
    method: str, est: Any, xs: np.ndarray, ys: np.ndarray, groups: np.ndarray, seed: int, mlp_kwargs: dict | None = None
) -> tuple[np.ndarray, dict, np.ndarray | None]:
    """Per-gene predictive std in standardised units: RMS of out-of-fold residuals on the training spots; also the
    settings used and the residuals themselves (spots x genes; ``None`` without any).

    In-sample residuals are far too small for these models (kNN with k = 1 reproduces its training spots exactly,
    ridge with a small penalty nearly so), so each spot's residual comes from a model that did not see it. The
    folds hold out whole training sections when there are at least two (neighbouring spots of one section look
    alike, so random spot folds would still leak, above all for kNN, and the prediction is meant for unseen
    sections); else random spots. Ridge and kNN are refit with the chosen penalty / k on every fold (cheap: one SVD
    or one neighbour index per fold); the MLP, expensive to refit, on one fold only. The root mean square (not the
    standard deviation about the residuals' mean) is used, since the interval is centred on the prediction and a
    bias is an error too.
    """
    import warnings

    folds = _residual_folds(groups, seed)
    if method == "mlp":
        folds = folds[:1]
    resid = np.full(ys.shape, np.nan, dtype=np.float64)
    for held in folds:
        keep = np.setdiff1d(np.arange(len(ys)), held)
        if keep.size < 2:
            continue
        if method == "ridge":
            from sklearn.linear_model import Ridge

            alpha = np.atleast_1d(np.asarray(est.alpha_, dtype=float))
            model = Ridge(alpha=alpha if alpha.size > 1 else float(alpha[0]), solver="svd").fit(xs[keep], ys[keep])
        elif method == "knn":
            from sklearn.neighbors import KNeighborsRegressor

            model = KNeighborsRegressor(n_neighbors=min(int(est.n_neighbors), keep.size)).fit(xs[keep], ys[keep])
        else:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPRegressor

            model = MLPRegressor(**(mlp_kwargs or {}))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(xs[keep], ys[keep])
        pred = np.asarray(model.predict(xs[held]), dtype=np.float64).reshape(len(held), -1)
        resid[held] = pred - ys[held]
    used = np.isfinite(resid).all(axis=1)
    if not used.any():
        return np.full(ys.shape[1], np.nan), {"std_method": "none"}, None
    rms = np.sqrt(np.mean(resid[used] ** 2, axis=0))
    how = "section-folds" if len(set(groups.tolist())) >= 2 else "spot-folds"
    return rms, {"std_method": f"{how}:{len(folds)}", "std_n_spots": int(used.sum())}, resid[used]


@_doc
def fit_baseline(
    data: AnnData | SpatialData,
    *,
    method: Literal["ridge", "mlp", "knn"] = "ridge",
    embedding_key: str = K.embedding_key(K.DEFAULT_ENCODER),
    genes_key: str = K.GENES_KEY,
    layer: str | None = None,
    train_sections: Sequence[str] | None = None,
    section_key: str = K.SECTION_KEY,
    seed: int = 0,
    alphas: Sequence[float] | None = None,
    n_neighbors: Sequence[int] | None = None,
    hidden_layer_sizes: Sequence[int] = (256,),
    max_iter: int = 200,
    val_fraction: float = 0.1,
    table_key: str | None = None,
) -> BaselineModel:
    """Fit a regression baseline from the histology embedding to the log expression of the gene panel.

    All three read the embedding standardised with the training spots' mean and standard deviation (as
    :func:`sthinge.tl.fit` does) and predict the panel's log expression standardised per gene:

    - ``"ridge"``: :class:`sklearn.linear_model.RidgeCV` with one penalty per gene chosen by efficient
      leave-one-out cross-validation over the log-spaced grid ``alphas``;
    - ``"mlp"``: :class:`sklearn.neural_network.MLPRegressor` (ReLU, Adam) with early stopping on a random
      ``val_fraction`` of the training spots;
    - ``"knn"``: :class:`sklearn.neighbors.KNeighborsRegressor`, k chosen among ``n_neighbors`` by the MSE on a
      random ``val_fraction`` of the training spots, then refit on all of them.

    Each also gets a Gaussian predictive standard deviation per gene (``BaselineModel.resid_std``, written by
    :func:`predict_baseline` as the prediction's std): the root mean square of out-of-fold residuals on the
    training spots, since in-sample residuals of ridge and kNN are far too small. The folds hold out whole training
    sections (up to 5 folds) when there are at least two, else 5 random folds of spots; ridge and kNN are refit with
    the chosen penalty / k on every fold, the MLP on one fold only (``params["std_method"]`` records which).

    Parameters
    ----------
    data
        SpatialData or AnnData with normalised expression, a gene panel and the embedding.
    method
        ``"ridge"``, ``"mlp"`` or ``"knn"``.
    %(embedding_key)s
    %(genes_key)s
    %(layer_lognorm)s
    train_sections
        Sections to train on (default all spots).
    %(section_key)s
    seed
        Random seed (validation splits, MLP initialisation).
    alphas
        Ridge penalty grid (default 17 values from 1e-2 to 1e6).
    n_neighbors
        Candidate k for kNN (default 1, 2, 3, 5, 10, 20, 50; those larger than the training set are skipped).
    hidden_layer_sizes
        MLP hidden layer widths.
    max_iter
        Maximum MLP epochs.
    val_fraction
        Fraction of training spots held out for MLP early stopping and the choice of k.
    %(table_key)s

    Returns
    -------
    A fitted :class:`BaselineModel`; write its predictions with :func:`predict_baseline`.

    Examples
    --------
    >>> ridge = st.tl.fit_baseline(sdata, method="ridge", embedding_key="X_uni", train_sections=["A2", "A3"])
    ... # doctest: +SKIP
    >>> st.tl.predict_baseline(sdata, ridge, sections=["A1"])  # writes tables["ridge"]  # doctest: +SKIP
    >>> st.tl.evaluate(sdata, pred_key="ridge")  # doctest: +SKIP
    """
    import warnings

    from sthinge.tl._data import _embedding, _expression, _panel, _section_rows, split_rows

    _check_choice("method", method, METHODS)
    seed = _check_int("seed", seed, low=0)
    max_iter = _check_int("max_iter", max_iter, low=1)
    val_fraction = _check_float("val_fraction", val_fraction, low=0.0, high=0.5, low_open=True)
    alphas = (
        _DEFAULT_ALPHAS if alphas is None else tuple(_check_float("alphas", a, low=0.0, low_open=True) for a in alphas)
    )
    if not alphas:
        raise ValueError("`alphas` is empty.")
    ks = _DEFAULT_NEIGHBORS if n_neighbors is None else tuple(_check_int("n_neighbors", k, low=1) for k in n_neighbors)
    if not ks:
        raise ValueError("`n_neighbors` is empty.")
    hidden = tuple(_check_int("hidden_layer_sizes", h, low=1) for h in hidden_layer_sizes)
    mlp_kwargs = dict(
        hidden_layer_sizes=hidden,
        early_stopping=True,
        validation_fraction=val_fraction,
        max_iter=max_iter,
        n_iter_no_change=10,
        random_state=seed,
    )  # the fit and its residual folds
    table, _ = _resolve_table(data, table_key)
    genes = _panel(table, genes_key)
    rows = _section_rows(table, train_sections, section_key, "train_sections")
    y, layer_used = _expression(table, layer, genes, rows)
    emb = _embedding(table, embedding_key, rows)
    if len(rows) < 3:
        raise ValueError("`train_sections` select fewer than 3 spots; cannot fit a baseline.")

    cond_mean, cond_std = _standardize_stats(emb)
    y_mean, y_std = _standardize_stats(y, tol=1e-8)
    xs = ((emb - cond_mean) / cond_std).astype(np.float32)
    ys = ((y - y_mean) / y_std).astype(np.float32)
    params: dict[str, Any] = {}
    history: list[dict[str, float]] = []

    if method == "ridge":
        from sklearn.linear_model import RidgeCV

        est = RidgeCV(alphas=np.asarray(alphas), alpha_per_target=True).fit(xs, ys)
        alpha = np.atleast_1d(np.asarray(est.alpha_, dtype=float))
        params["alpha"] = alpha.tolist()
        params["alpha_median"] = float(np.median(alpha))
        at_edge = np.isin(alpha, [min(alphas), max(alphas)]).mean()
        if len(alphas) > 1 and at_edge > 0.5:
            logg.warning(
                f"fit_baseline: the ridge penalty sits at the edge of `alphas` for {at_edge:.0%} of genes; "
                "widen the grid."
            )
    elif method == "knn":
        from sklearn.neighbors import KNeighborsRegressor

        fit_idx, val_idx = split_rows(len(rows), val_fraction, seed, min_val=1)
        cand = [k for k in dict.fromkeys(ks) if k <= len(fit_idx)]
        if not cand:
            raise ValueError(f"`n_neighbors` {list(ks)} all exceed the {len(fit_idx)} spots available for fitting.")
        scores = {}
        for k in cand:
            pred = KNeighborsRegressor(n_neighbors=k).fit(xs[fit_idx], ys[fit_idx]).predict(xs[val_idx])
            scores[k] = float(((pred - ys[val_idx]) ** 2).mean())
        best = min(scores, key=scores.get)
        est = KNeighborsRegressor(n_neighbors=min(best, len(rows))).fit(xs, ys)
        params.update(n_neighbors=int(best), val_mse={int(k): v for k, v in scores.items()})
    else:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        est = MLPRegressor(**mlp_kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(xs, ys)
        params.update(n_iter=int(est.n_iter_), hidden_layer_sizes=list(hidden))
        val = list(getattr(est, "validation_scores_", None) or [])
        history = [
            {"epoch": float(i), "train_loss": float(loss), **({"val_score": float(val[i])} if i < len(val) else {})}
            for i, loss in enumerate(est.loss_curve_)
        ]

    # Gaussian predictive std: per-gene RMS of held-out residuals (see `_residual_std` for the folds and why)
    groups = (
        table.obs[section_key].astype(str).to_numpy()[rows]
        if section_key in table.obs
        else np.full(len(rows), "all", dtype=object)
    )
    resid_std, std_info, resid = _residual_std(method, est, xs, ys, groups, seed, mlp_kwargs)
    params.update(std_info)
    calibration = None
    if resid is not None and len(resid) >= 2 and np.isfinite(resid_std).all():
        # the same conformal step as HINGE's, on the held-out residuals (log expression units)
        from sthinge.tl._conformal import conformal_calibration

        r = resid * y_std
        calibration = conformal_calibration(
            r, np.zeros_like(r), np.broadcast_to(resid_std * y_std, r.shape), info={"source": std_info["std_method"]}
        )

    info = table.uns.get(K.UNS_NORMALIZE, {})
    train_names = sorted(set(table.obs[section_key].astype(str).iloc[rows])) if section_key in table.obs else []
    model = BaselineModel(
        method=method,
        estimator=est,
        genes=list(genes),
        embedding_key=embedding_key,
        cond_mean=cond_mean,
        cond_std=cond_std,
        y_mean=y_mean.astype(np.float32),
        y_std=y_std.astype(np.float32),
        layer=layer_used,
        transform=dict(info) if isinstance(info, dict) else {},
        params=params,
        train_sections=train_names,
        history=history,
        resid_std=(resid_std * y_std).astype(np.float32) if np.isfinite(resid_std).all() else None,
        calibration=calibration,
    )
    logg.info(f"fit_baseline: {method} on {len(rows)} spots x {len(genes)} genes ({embedding_key}, {emb.shape[1]}-d).")
    return model


@_removed_keywords(copy="pass `inplace=False` to get the prediction table without writing it into `data`")
@_doc
def predict_baseline(
    data: AnnData | SpatialData,
    model: BaselineModel,
    *,
    sections: Sequence[str] | str | None = None,
    section_key: str = K.SECTION_KEY,
    levels: Sequence[float] | None = (0.5, 0.9),
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
    table_key: str | None = None,
) -> AnnData | None:
    """Predict with a baseline and write the result exactly as :func:`sthinge.tl.predict` does.

    A regression baseline gives one value per spot and gene, and a Gaussian predictive standard deviation: per
    gene, the same for every spot, from the model's held-out residuals on its training spots
    (``BaselineModel.resid_std``, see :func:`fit_baseline`). It is written where HINGE writes its std
    (``layers[f"{key_added}_std"]``, or ``obsm[f"{key_added}_std"]`` for AnnData), so :func:`sthinge.tl.evaluate`
    reports the baseline's CRPS (Gaussian) and :func:`sthinge.pl.spatial` draws its ``"<key>_std"``. Its
    intervals at ``levels`` are split-conformal, as HINGE's: per gene, from the same held-out residuals
    (``BaselineModel.calibration``). There are no samples.

    Parameters
    ----------
    data
        SpatialData or AnnData holding the model's embedding in ``obsm``.
    model
        A :class:`BaselineModel` from :func:`fit_baseline`.
    sections
        Only predict these sections (values of ``obs[section_key]``); default all spots.
    %(section_key)s
    levels
        Nominal levels of the intervals to write (``layers[f"{key_added}_q05"]``, ... as :func:`sthinge.tl.predict`
        writes them); ``None``: none.
    key_added
        Name of the prediction (default: the method, e.g. ``"ridge"``); never the table being read,
        ``obsm["spatial"]`` or the input embedding.
    overwrite
        Replace an existing prediction of the same name; without it, that is an error raised before any work.
    %(inplace_prediction)s
    %(table_key)s

    %(returns_prediction)s
    The prediction table is an AnnData with the panel as ``var``, the source rows' ``obs`` and ``obsm["spatial"]``,
    ``X`` (the predicted mean), ``layers[f"{key_added}_std"]`` (the Gaussian std) and ``uns[key_added]`` (the
    settings). For SpatialData input it is written as ``tables[key_added]``, annotating the same shapes as the
    source table; for AnnData input the mean and std are written to ``obsm[key_added]`` and
    ``obsm[f"{key_added}_std"]`` (DataFrames, NaN for rows not predicted). A model without ``resid_std`` writes no
    std (and an ``obsm[f"{key_added}_std"]`` left by an earlier prediction replaced with ``overwrite`` is removed).

    Examples
    --------
    >>> st.tl.predict_baseline(sdata, ridge, sections="A1")  # doctest: +SKIP
    >>> sdata.tables["ridge"]  # doctest: +SKIP
    """
    from sthinge.tl._predict import _intervals, _prediction_inputs, _write_prediction

    if not isinstance(model, BaselineModel):
        raise TypeError(f"`model` must be a BaselineModel from `fit_baseline`, got {type(model).__name__}.")
    key_added = model.method if key_added is None else key_added
    table, source_key = _resolve_table(data, table_key)
    where = dict(sections=sections, section_key=section_key, overwrite=overwrite, levels=levels)
    inplace, levels, rows, emb = _prediction_inputs(data, table, source_key, model, key_added, inplace=inplace, **where)
    levels = levels if model.resid_std is not None else ()  # no std: no intervals
    emb = np.asarray(emb[rows], dtype=np.float32)
    mean = model.predict_array(emb)
    std = model.predict_std_array(len(rows))  # Gaussian std, written like HINGE's (layers / obsm f"{key}_std")
    uns = {
        "method": model.method,
        "embedding_key": model.embedding_key,
        "params": {k: v for k, v in model.params.items() if k not in ("alpha", "val_mse")},
        "transform": str(model.transform.get("transform", "")),
        "training_layer": str(model.layer or ""),
        "source_table": source_key if source_key is not None else "",
    }
    logg.info(f"predict_baseline: {len(rows)} spots x {model.n_genes} genes ({model.method}) -> {key_added!r}")
    bounds = _intervals(mean, std, levels, model.calibration, key_added, uns)
    return _write_prediction(
        data, table, rows, mean, std, model.genes, key_added, uns, not inplace, extra_layers=bounds
    )
