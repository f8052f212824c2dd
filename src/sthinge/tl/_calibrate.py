"""``tl.calibrate``: split-conformal calibration of a HINGE model's prediction intervals on measured spots."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._utils import _check_int, _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.tl._conformal import Calibration
    from sthinge.tl._model import HingeModel


@_doc
def calibrate(
    data: AnnData | SpatialData,
    model: HingeModel,
    *,
    sections: Sequence[str] | str | None = None,
    section_key: str = K.SECTION_KEY,
    layer: str | None = None,
    n_samples: int = 4,
    n_steps: int | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    device: str | None = None,
    table_key: str | None = None,
) -> Calibration:
    """Calibrate the prediction intervals of ``model`` on measured spots it was not trained on (split conformal).

    The model predicts the spots (mean and predictive std, as :func:`sthinge.tl.predict` does), and for every gene
    g the errors in units of the predicted spread, ``|y - mean| / (std + delta_g)``, are sorted; the interval at
    level L is then ``mean +- q_g(L) (std + delta_g)`` with ``q_g(L)`` the ``ceil((n + 1) L)``-th smallest of the
    n calibration errors. If a new spot is exchangeable with the calibration spots, its interval covers its
    value with probability at least L (Vovk et al. 2005; Lei et al. 2018). Spots of a new section are not
    exchangeable with spots of the training sections: calibrate on a section the model did not see in training
    for intervals that hold on new sections (see the "Which predictions can I trust?" part of the quickstart
    tutorial and ``docs/benchmarks.md`` for how much this matters). :func:`sthinge.tl.fit` calibrates on its
    validation spots, or on ``calibration_sections``, by itself.

    Parameters
    ----------
    data
        SpatialData or AnnData with the measured expression (the model's training layer, or ``layer``) and the
        model's embedding.
    model
        The :class:`sthinge.tl.HingeModel` to calibrate; its :attr:`~sthinge.tl.HingeModel.calibration` is
        replaced and is saved with it.
    sections
        Sections to calibrate on (values of ``obs[section_key]``; default all spots). They must not have been
        used in training (a warning says so otherwise: the intervals would be too narrow).
    %(section_key)s
    layer
        Layer of measured log-normalised expression; default the model's training layer, else the one
        ``pp.normalize`` wrote.
    n_samples, n_steps, seed, batch_size, device
        As in :func:`sthinge.tl.predict`. Predict new spots with the same ``n_samples`` and ``n_steps``: the
        calibration rescales the std that these settings give.
    %(table_key)s

    Returns
    -------
    The new :class:`~sthinge.tl._conformal.Calibration`, also stored as ``model.calibration``.

    Examples
    --------
    >>> st.tl.calibrate(sdata, model, sections=["C3"])  # doctest: +SKIP
    >>> st.tl.predict(sdata, model, sections=["C2"], levels=(0.5, 0.9))  # doctest: +SKIP
    """
    from sthinge.tl._conformal import conformal_calibration
    from sthinge.tl._data import _expression, _section_rows
    from sthinge.tl._model import HingeModel
    from sthinge.tl._predict import predict

    if not isinstance(model, HingeModel):
        raise TypeError(f"`model` must be a HingeModel, got {type(model).__name__}.")
    n_samples = _check_int("n_samples", n_samples, low=1, high=100_000)
    table, _ = _resolve_table(data, table_key)
    rows = _section_rows(table, sections, section_key, "sections")
    if len(rows) < 2:
        raise ValueError(f"`sections` select {len(rows)} spot(s); calibration needs at least 2.")
    if layer is None and model.layer is not None and model.layer in table.layers:
        layer = model.layer
    missing = [g for g in model.genes if g not in table.var_names]
    if missing:
        raise KeyError(
            f"`data` lacks {len(missing)} gene(s) of the model's panel (e.g. {missing[:3]}); calibration "
            "needs their measured expression."
        )
    truth, layer_used = _expression(table, layer, model.genes, rows)
    if section_key in table.obs and sections is not None:
        seen = sorted(set(table.obs[section_key].astype(str).iloc[rows]) & set(model.train_sections))
        if seen:
            logg.warning(
                f"calibrate: section(s) {seen} were used to train the model; intervals calibrated on them "
                "are too narrow for new sections."
            )
    pred = predict(
        data,
        model,
        sections=sections,
        section_key=section_key,
        n_samples=n_samples,
        n_steps=n_steps,
        seed=seed,
        batch_size=batch_size,
        device=device,
        levels=None,
        inplace=False,
        table_key=table_key,
    )
    std = pred.layers[f"{K.PRED_KEY}{K.STD_SUFFIX}"]
    names = sorted(set(table.obs[section_key].astype(str).iloc[rows])) if section_key in table.obs else []
    info = {
        "source": "sections" if sections is not None else "all spots",
        "sections": names,
        "n_samples": int(n_samples),
        "n_steps": int(n_steps or model.config.n_steps),
        "seed": int(seed),
        "layer": layer_used,
    }
    model.calibration = conformal_calibration(truth, pred.X, std, info=info)
    logg.info(f"calibrate: {len(rows)} spots x {model.n_genes} genes ({', '.join(names) or 'all spots'}).")
    return model.calibration


def calibrate_after_fit(
    model, table, cal_rows, genes, layer, embedding_key, n_samples, seed, source, section_key, *, n_steps=None
):
    """:func:`sthinge.tl.calibrate` on ``cal_rows`` of ``table`` (the same path as for a user's call)."""
    import anndata as ad

    from sthinge.tl._data import _embedding, _expression

    if len(cal_rows) < 2:
        logg.warning(
            "fit: fewer than 2 spots to calibrate on (no validation spots): the model is not calibrated; "
            "use `tl.calibrate` on a held-out section."
        )
        return
    truth, _ = _expression(table, layer, genes, cal_rows)
    obs = table.obs.iloc[cal_rows][[section_key]] if section_key in table.obs else None
    spots = ad.AnnData(
        X=truth, obs=obs, layers={"truth": truth}, obsm={embedding_key: _embedding(table, embedding_key, cal_rows)}
    )
    spots.var_names = list(genes)
    cal = calibrate(
        spots, model, layer="truth", n_samples=n_samples, n_steps=n_steps, seed=seed, section_key=section_key
    )
    cal.info["source"] = source
