"""``tl.fit``: train HINGE (frozen backbone + SoftAdaLN) on a SpatialData / AnnData table with Lightning."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._settings import TrainerSpec
from sthinge._utils import _check_choice, _check_float, _check_int, _resolve_table
from sthinge.tl._backbone import _resolve_backbone, _without_read_depth_tokens  # noqa: F401 - used by tests

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.models import CellFM, HingeConfig, ScGPT
    from sthinge.tl._model import HingeModel

_VAL_METRICS = ("mse", "loss")


def _check_resume_checkpoint(last: Path) -> None:
    """Refuse a ``last.ckpt`` that is truncated, holds pickled objects or is not one of ``fit``'s, before training."""
    from sthinge.io import safe_torch_load

    try:
        ckpt = safe_torch_load(last)
    except ValueError as err:
        raise ValueError(f"Cannot resume (`resume=True`): {err}") from None
    needed = ("state_dict", "loops", "optimizer_states", "lr_schedulers")
    missing = [k for k in needed if not isinstance(ckpt, dict) or k not in ckpt]
    if missing:
        raise ValueError(
            f"Cannot resume (`resume=True`): {str(last)!r} is not a checkpoint written by `sthinge.tl.fit` "
            f"(missing {missing}). Remove it or choose another `checkpoint_dir`."
        )


def _check_checkpoint_dir(checkpoint_dir, *, resume: bool, overwrite) -> None:
    """Before any work: ``checkpoint_dir`` can be written, and a ``last.ckpt`` of another fit there is never
    replaced unless ``resume`` (continue from it) or ``overwrite`` (start afresh over it)."""
    from sthinge._utils import _check_overwrite, _check_writable_dir

    if not isinstance(resume, bool):
        raise TypeError(f"`resume` must be True or False, got {resume!r}.")
    if checkpoint_dir is None:
        _check_overwrite("", False, overwrite)  # type check of `overwrite` only
        return
    if not isinstance(checkpoint_dir, str | os.PathLike):
        raise TypeError(f"`checkpoint_dir` must be a path, got {type(checkpoint_dir).__name__}.")
    last = Path(checkpoint_dir).expanduser() / "last.ckpt"
    if not resume:
        _check_overwrite(
            f"`checkpoint_dir` {str(checkpoint_dir)!r}: the checkpoint {str(last)!r} of an earlier fit",
            last.exists(),
            overwrite,
            flag="resume=True` to continue from it, or `overwrite=True",
        )
    _check_writable_dir("checkpoint_dir", checkpoint_dir)


# ----------------------------------------------------------------------------------------------------------
@_doc
def fit(
    data: SpatialData | AnnData,
    *,
    backbone: str | os.PathLike | CellFM | ScGPT = "tiny",
    weights: str | os.PathLike | None = None,
    config: dict[str, Any] | HingeConfig | None = None,
    embedding_key: str = K.embedding_key(K.DEFAULT_ENCODER),
    genes_key: str = K.GENES_KEY,
    layer: str | None = None,
    train_sections: Sequence[str] | None = None,
    section_key: str = K.SECTION_KEY,
    val_fraction: float = 0.1,
    max_epochs: int = 50,
    batch_size: int = 32,
    lr: float | None = None,
    weight_decay: float = 0.0,
    milestones: Sequence[int] = (20, 30),
    gamma: float = 0.2,
    patience: int = 5,
    min_epochs: int = 15,
    curriculum_epochs: int = 5,
    val_metric: str = "mse",
    val_steps: int = 5,
    loss_weight: str = "masked",
    standardize_embedding: bool = True,
    gradient_clip_val: float | None = 1.0,
    seed: int = 42,
    accelerator: str = "auto",
    devices: int | str = "auto",
    strategy: str = "auto",
    precision: str | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    calibrate: bool = True,
    calibration_sections: Sequence[str] | None = None,
    calibration_samples: int = 4,
    calibration_steps: int | None = None,
    table_key: str | None = None,
) -> HingeModel:
    """Train HINGE on the spots of ``data``: a frozen expression backbone adapted by SoftAdaLN to histology.

    The defaults are the paper's (App. A.6): AdamW with learning rate 1e-4 (on CellFM's width; see ``lr``) and no
    weight decay, batch 32, MultiStepLR at epochs 20 and 30 (x0.2), at most 50 epochs with early stopping
    (patience 5, checked from epoch 15 on, on the validation MSE of predictions sampled with ``val_steps`` steps),
    the warm-start curriculum (mask ratio <= 20 %) for 5 epochs, and gradient clipping at 1.0 as in the official
    code. sthinge's own defaults, each chosen by measurement (``docs/benchmarks.md``): the loss weighting
    (``loss_weight``), the Gaussian decoder and the hidden-unit modulation (``config``), and the learning rate of
    narrow backbones (``lr``).

    Parameters
    ----------
    data
        SpatialData or AnnData with normalised expression (``pp.normalize``), a gene panel (``pp.select_genes``)
        and spot embeddings (``pp.embed_histology``).
    backbone
        A preset name (``"tiny"``, ``"cellfm-80m"``, ``"cellfm-800m"``; for HINGE on scGPT ``"scgpt-whole-human"``,
        ``"scgpt-tiny"``) together with ``weights=``, a :class:`sthinge.models.CellFM` or
        :class:`sthinge.models.ScGPT`, or the path of a backbone checkpoint (CellFM ``.ckpt``/``.pt``, an scGPT
        checkpoint folder with ``args.json``, ``vocab.json`` and ``best_model.pt``, or one written by
        :func:`sthinge.tl.pretrain_backbone`). HINGE on scGPT supports the variants ``"hinge"`` and
        ``"nosoftnorm"``. ``"default"``: sthinge's own offline backbone (:func:`sthinge.tl.default_backbone`,
        pre-trained once on the Her2ST sections of patients other than C and cached; the first call takes 2-3
        minutes on 2 idle CPU cores). A preset without weights is randomly initialised (for tests only; a warning
        says so).
    weights
        Local weights of the preset: a CellFM file, or an scGPT checkpoint folder (its shape must be the preset's).
    config
        Model variant: a dict of :class:`sthinge.models.HingeConfig` fields (e.g. ``{"variant": "scratch"}``,
        ``{"init": "exact-identity"}``, ``{"mask_fill": "zero"}``, ``{"condition": "concat"}``). Unless it names a
        ``likelihood``, ``fit`` trains sthinge's distributional decoder (``"gaussian"``: a per-gene standard
        deviation next to the mean, trained with the CRPS, so that samples are draws; see Method,
        :ref:`method-uncertainty`); ``{"likelihood": "point"}`` is the paper's decoder. Unless it names a
        ``modulation``, the condition also scales the hidden units of every frozen feed-forward and of the decoder
        (``"hidden"``; see Method, :ref:`method-softadaln`); ``{"modulation": "paper"}`` is the paper's SoftAdaLN
        alone.
    %(embedding_key)s
    %(genes_key)s
    %(layer_lognorm)s
    train_sections
        Sections to train on (default: all); values of ``obs[section_key]``.
    %(section_key)s
    val_fraction
        Fraction of the training spots held out for early stopping.
    max_epochs, batch_size, weight_decay, milestones, gamma, patience, min_epochs, curriculum_epochs
        Training schedule (see above). ``curriculum_epochs=0`` is the NoCurr ablation.
    lr
        AdamW learning rate. Default: the paper's 1e-4 at CellFM's width 1536, scaled inversely with the
        backbone's width D and capped at 1e-3 (:func:`sthinge.tl._model.default_lr`): 1e-4 for CellFM 80M and 800M,
        3e-4 for scGPT whole-human, 1e-3 for the 128-wide offline default backbone. On that backbone the
        zero-initialised modulators barely move in 30 epochs at 1e-4 (oracle diagnostic, ``docs/benchmarks.md``).
    val_metric
        ``"mse"`` (sampled predictions of the held-out spots, the paper's validation MSE) or ``"loss"`` (the
        masked-diffusion loss, cheaper).
    val_steps
        Step budget of the validation sampler.
    loss_weight
        Which masked genes the loss scores (see :func:`sthinge.models.training_loss`): ``"masked"`` (default: every
        masked gene, equally weighted), ``"pi_t"`` (the paper's Eq. 2: every masked gene, weighted by the step's
        reveal probability) or ``"revealed"`` (the official code: only the genes revealed at the step). On Her2ST
        patient C leave-one-section-out (five folds) PCC-50 was 0.358 with ``"masked"``, 0.344 with ``"pi_t"`` and
        0.328 with ``"revealed"`` (``docs/benchmarks.md``).
    standardize_embedding
        Standardise each embedding feature with the training spots' mean and standard deviation (stored in the
        model and applied again at prediction).
    gradient_clip_val
        Gradient-norm clipping (None to switch off).
    seed
        Random seed of the split, the initialisation of new layers (and of a preset backbone without weights) and
        the training draws: the same seed gives the same weights.
    accelerator, devices, strategy, precision
        Passed to :class:`lightning.pytorch.Trainer`. ``precision=None`` picks ``"bf16-mixed"`` on a GPU that
        supports it and ``"32-true"`` otherwise. ``devices > 1`` trains data-parallel (DDP).
    checkpoint_dir
        Folder for ``last.ckpt``, written atomically (a temporary file beside it, then renamed) at the end of
        every epoch once its weights were checked to be finite. It holds the trainable weights (not the frozen
        backbone), the optimizer and LR-scheduler states, the epoch, the early-stopping state (best weights and
        epoch, patience counter), the history and the states of all random generators (torch CPU/CUDA, numpy,
        python, the data loader's). Needed for ``resume``.
    resume
        Continue from ``checkpoint_dir/last.ckpt`` if it exists (it is read with ``weights_only=True``; a
        truncated file or one holding pickled objects is refused). A fit interrupted at any point (Ctrl-C, a
        crash, or ``max_epochs`` reached) continues from the end of its last completed epoch and, with the same
        data, arguments (``max_epochs`` aside) and ``seed`` on one device, ends with exactly the same weights as
        an uninterrupted fit, as long as the computations themselves are deterministic (on the CPU with the same
        number of threads; on a GPU only with deterministic kernels). With several devices (DDP) the checkpoint
        holds rank 0's generator states only, so resuming is not exact.
    overwrite
        Start afresh over the ``last.ckpt`` of an earlier fit in ``checkpoint_dir``. Without it (and without
        ``resume``), an existing checkpoint is an error raised before any work: it is never replaced silently.
    calibrate
        After training, calibrate the prediction intervals (split conformal, :func:`sthinge.tl.calibrate`) on
        spots training did not use: the ``calibration_sections`` if given, else the validation spots.
    calibration_sections
        Sections held out of training and used only to calibrate (values of ``obs[section_key]``, within
        ``train_sections``). Whole held-out sections give intervals that hold better on new sections than
        random validation spots of the training sections do (``docs/benchmarks.md``), at the cost of training
        on fewer sections.
    calibration_samples, calibration_steps
        ``n_samples`` and ``n_steps`` of the calibration's predictions (default steps: the model's ``n_steps``).
        Predict new spots with the same: the calibration rescales the spread these settings give, and
        :func:`sthinge.tl.predict` warns when they differ.
    %(table_key)s

    Returns
    -------
    The trained :class:`sthinge.tl.HingeModel` (its ``history`` holds the per-epoch losses).

    Raises
    ------
    FloatingPointError
        When the training loss or a trainable weight becomes NaN or infinite; the message names the epoch and,
        with ``checkpoint_dir``, the ``last.ckpt`` holding the last good epoch (not overwritten by the bad one).
    KeyboardInterrupt
        When interrupted (Ctrl-C); the message names the checkpoint to resume from.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic()
    >>> st.pp.normalize(sdata)
    >>> st.pp.select_genes(sdata, vocab=None)
    >>> st.pp.embed_histology(sdata)
    >>> model = st.tl.fit(sdata, backbone="tiny", max_epochs=2)  # doctest: +SKIP
    """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sthinge._settings import settings
    from sthinge.models.backbone import retrofit
    from sthinge.tl._calibrate import calibrate_after_fit
    from sthinge.tl._data import _embedding, _expression, _panel, _panel_symbols, _section_rows
    from sthinge.tl._model import HingeModel, _hinge_config, default_lr, embedding_recipe_of

    # ---- validate everything before any work ----------------------------------------------------------
    table, _ = _resolve_table(data, table_key)
    val_fraction = _check_float("val_fraction", val_fraction, low=0.0, high=0.9)
    spec = TrainerSpec.checked("fit", max_epochs, None, accelerator, devices, strategy, precision, gradient_clip_val)
    max_epochs = spec.max_epochs
    batch_size = _check_int("batch_size", batch_size, low=1)
    if lr is not None:
        lr = _check_float("lr", lr, low=0.0, low_open=True)
    weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
    gamma = _check_float("gamma", gamma, low=0.0, low_open=True)
    patience = _check_int("patience", patience, low=1)
    min_epochs = _check_int("min_epochs", min_epochs, low=0)
    curriculum_epochs = _check_int("curriculum_epochs", curriculum_epochs, low=0)
    val_steps = _check_int("val_steps", val_steps, low=1)
    seed = _check_int("seed", seed, low=0)
    milestones = [_check_int("milestones", m, low=1) for m in milestones]
    _check_choice("val_metric", val_metric, _VAL_METRICS)
    _check_choice("loss_weight", loss_weight, ("revealed", "pi_t", "masked"))
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs `checkpoint_dir` (where the checkpoints of the interrupted fit are).")
    _check_checkpoint_dir(checkpoint_dir, resume=resume, overwrite=overwrite)
    if table.n_obs == 0:
        raise ValueError("`data` has no spots.")
    genes = _panel(table, genes_key)
    symbols = _panel_symbols(table, genes_key, genes)
    rows = _section_rows(table, train_sections, section_key, "train_sections")
    if not isinstance(calibrate, bool):
        raise TypeError(f"`calibrate` must be True or False, got {calibrate!r}.")
    calibration_samples = _check_int("calibration_samples", calibration_samples, low=1, high=10_000)
    cal_rows = np.zeros(0, dtype=np.int64)
    if calibration_sections is not None:
        cal_rows = _section_rows(table, calibration_sections, section_key, "calibration_sections")
        outside = np.setdiff1d(cal_rows, rows)
        if outside.size:
            raise ValueError("`calibration_sections` must lie within `train_sections` (they are held out of them).")
        if not calibrate:
            raise ValueError("`calibration_sections` needs `calibrate=True`.")
        rows = np.setdiff1d(rows, cal_rows)
    x, layer_used = _expression(table, layer, genes, rows)
    emb = _embedding(table, embedding_key, rows)
    if len(rows) < 2:
        raise ValueError("`train_sections` (without `calibration_sections`) select fewer than 2 spots; cannot train.")
    with torch.random.fork_rng(devices=[]):  # a randomly initialised preset depends on `seed` only
        torch.manual_seed(seed)
        net, source = _resolve_backbone(backbone, weights)
    try:
        gene_ids = net.gene_ids(symbols)
    except KeyError as err:
        detail = err.args[0] if err.args else ""
        raise KeyError(
            f"The panel (`genes_key` {genes_key!r}) has genes outside the vocabulary of the backbone ({detail}); "
            "run `pp.select_genes(data, vocab=...)` with the backbone's vocabulary (a CellFM vocabulary name such as "
            "'cellfm-80m', or the scGPT checkpoint folder)."
        ) from None
    hconfig = _hinge_config(config, len(genes), emb.shape[1])
    if lr is None:
        lr = default_lr(net.config.d_model)
    if calibration_steps is not None:
        calibration_steps = _check_int("calibration_steps", calibration_steps, low=1, high=hconfig.n_steps)

    # ---- data ---------------------------------------------------------------------------------------------
    from sthinge.tl._data import split_rows
    from sthinge.tl._train import BestAndEarlyStop, HingeLightning, run_trainer

    train_idx, val_idx = split_rows(len(rows), val_fraction, seed)
    n_val = len(val_idx)
    if standardize_embedding:
        mean = emb[train_idx].mean(0)
        std = emb[train_idx].std(0)
        std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    else:
        mean, std = np.zeros(emb.shape[1], np.float32), np.ones(emb.shape[1], np.float32)
    xt, ct = torch.from_numpy(x), torch.from_numpy(((emb - mean) / std).astype(np.float32))
    g = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(
        TensorDataset(xt[train_idx], ct[train_idx]),
        batch_size=batch_size,
        shuffle=True,
        generator=g,
        drop_last=len(train_idx) > batch_size,
    )
    val_dl = None
    if n_val > 0:
        val_dl = DataLoader(TensorDataset(xt[val_idx], ct[val_idx]), batch_size=max(batch_size * 8, 64))

    # ---- module, run --------------------------------------------------------------------------------------
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)
    module = retrofit(net, gene_ids, hconfig)
    lit = HingeLightning(
        module,
        lr=lr,
        weight_decay=weight_decay,
        milestones=milestones,
        gamma=gamma,
        curriculum_epochs=curriculum_epochs,
        val_metric=val_metric,
        val_steps=val_steps,
        loss_weight=loss_weight,
    )
    ckpt_path = None
    if checkpoint_dir is not None:
        last = Path(checkpoint_dir) / "last.ckpt"
        if resume and last.is_file():
            _check_resume_checkpoint(last)
            ckpt_path = str(last)
            logg.info(f"resuming from {last}")
        elif resume:
            logg.warning(f"`resume=True` but {last} does not exist: starting from scratch.")
    stopper = BestAndEarlyStop(patience, min_epochs)
    run_trainer(
        lit,
        train_dl,
        val_dl,
        spec,
        callbacks=[stopper],
        progress_bar=settings.verbosity >= 2,
        checkpoint_dir=checkpoint_dir,
        ckpt_path=ckpt_path,
        loader_generator=g,
    )
    stopper.restore(module)
    module.eval()
    module.cpu()
    info = table.uns.get(K.UNS_NORMALIZE, {})
    train_names = sorted(set(table.obs[section_key].astype(str).iloc[rows])) if section_key in table.obs else []
    model = HingeModel(
        module,
        genes=genes,
        symbols=symbols,
        embedding_key=embedding_key,
        cond_mean=mean,
        cond_std=std,
        backbone_source=source,
        layer=layer_used,
        transform=info if isinstance(info, dict) else {},
        history=lit.history,
        train_sections=train_names,
        embedding=embedding_recipe_of(table, embedding_key),
    )
    logg.info(f"fit: {len(lit.history)} epochs; best validation {stopper.best:.4g} at epoch {stopper.best_epoch}.")
    if calibrate:
        calibrate_after_fit(
            model,
            table,
            rows[val_idx] if cal_rows.size == 0 else cal_rows,
            genes,
            layer_used,
            embedding_key,
            calibration_samples,
            seed,
            "validation spots" if cal_rows.size == 0 else "calibration_sections",
            section_key,
            n_steps=calibration_steps,
        )
    return model
