"""``tl.pretrain_backbone``: pre-train a CellFM (or scGPT) backbone by masked value modelling on expression-only data.

The real CellFM and scGPT weights may not be at hand. This module trains a backbone of the same architecture and
checkpoint format from scratch (the backbone's own objective, see Method, :ref:`method-backbone`) on expression
that needs no images (e.g. Her2ST sections without H&E, or any scRNA-seq table), in the input regime HINGE uses it in:
a fixed gene panel whose every gene is a token (zeros included), with genes a section did not measure kept
out of the inputs and the loss. The checkpoint is written by :func:`sthinge.io.save_cellfm` (an scGPT one by
:func:`sthinge.io.save_scgpt`, as a published checkpoint folder), so the loaders and ``tl.fit(backbone=path)`` treat
it exactly like the real weights.
The corpus is built in :mod:`sthinge.tl._corpus`, the loop runs in :mod:`sthinge.tl._train`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg
from sthinge._settings import TrainerSpec
from sthinge._utils import _check_choice, _check_float, _check_int

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.models.cellfm import CellFM, CellFMConfig
    from sthinge.models.scgpt import ScGPT, ScGPTConfig

_FORMATS = {"pt": ".pt", "ckpt": ".ckpt", "safetensors": ".safetensors"}


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
@_doc
def pretrain_backbone(
    data: AnnData | SpatialData | Sequence[AnnData | SpatialData],
    *,
    preset: str | CellFMConfig | ScGPTConfig = "tiny",
    genes: Sequence[str] | None = None,
    vocab: str | int = "cellfm-80m",
    layer: str | None = None,
    mask_ratio: float = 0.2,
    n_tokens: int | None = None,
    max_epochs: int = 10,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 0.01,
    gradient_clip_val: float | None = 1.0,
    seed: int = 0,
    section_key: str = K.SECTION_KEY,
    presence_key: str | None = K.VAR_SECTIONS,
    val_fraction: float = 0.05,
    save: str | os.PathLike | None = None,
    overwrite: bool = False,
    format: str = "pt",
    accelerator: str = "auto",
    devices: int | str = "auto",
    precision: str | None = None,
    table_key: str | None = None,
) -> CellFM | ScGPT:
    """Pre-train a CellFM (or scGPT) backbone from scratch by masked value modelling on expression-only data.

    CellFM's objective (see Method, :ref:`method-backbone`; :func:`sthinge.models.masked_value_loss`): in every spot
    ⌊``mask_ratio``·n⌋ of its n measured tokens are chosen, 80 % of those get their value hidden behind the mask
    token, and the squared error of the value decoder and of the cell-wise decoder on the chosen genes is
    minimised. Inputs follow HINGE's regime rather than CellFM's: a fixed gene panel whose genes are all
    tokens, zeros included; genes that a section did not measure are **missing**, i.e. padding tokens that
    neither enter the model nor the loss (not zeros). The result is saved with
    :func:`sthinge.io.save_cellfm` in CellFM's key names plus its configuration, so that
    ``load_cellfm(path)`` and ``tl.fit(data, backbone=path)`` use it like real CellFM weights. Gene embeddings
    of vocabulary genes outside the panel keep their random initialisation.

    Parameters
    ----------
    data
        One or several AnnData / SpatialData objects (e.g. all expression-only Her2ST sections, or an
        scRNA-seq h5ad); var names must be gene symbols (old symbols are renamed as in ``pp.select_genes``).
    preset
        Size of the backbone: a name of :data:`sthinge.models.PRESETS` (``"tiny"``, ...) or of
        :data:`CPU_PRESETS` (``"cpu-small"``), or a :class:`~sthinge.models.cellfm.CellFMConfig`. Configs with
        CellFM-80M's read-depth tokens are refused. An scGPT-shaped backbone: ``"scgpt-cpu-small"``
        (:data:`SCGPT_CPU_PRESETS`), ``"scgpt-tiny"``, ``"scgpt-whole-human"`` or an
        :class:`~sthinge.models.scgpt.ScGPTConfig`; it is trained with scGPT's masked value objective
        (:meth:`sthinge.models.ScGPT.pretraining_loss`) on a vocabulary of the ``vocab`` genes plus scGPT's special
        tokens, and saved as an scGPT checkpoint folder (``args.json``, ``vocab.json``, ``best_model.pt``).
    genes
        The gene panel (symbols; mapped to the vocabulary). Default: the panel ``uns["sthinge_genes"]`` of the
        first table (``pp.select_genes``) if present, else every gene of ``data`` in the vocabulary.
    vocab
        Gene vocabulary of the backbone: ``"cellfm-80m"`` (27,855 genes) or ``"cellfm-800m"`` (24,078).
    layer
        Layer of log-normalised expression in every table. Default: the layer written by ``pp.normalize`` if
        present, else ln(1 + CP10k) of the raw counts in ``X`` (library size over all genes of the table),
        computed per table. A layer of raw counts, or non-integer ``X`` without a normalised layer, is refused.
    mask_ratio
        Fraction of each spot's tokens chosen for the loss (80 % of them hidden), CellFM's 0.2.
    n_tokens
        ``None`` (default): every panel gene is a token in every step. An integer draws that many panel genes
        per spot and step (measured genes first), so a large panel trains at the cost of a small one; every gene
        embedding of the panel is still trained.
    max_epochs, max_steps
        Length of training (``max_steps`` caps the number of optimizer steps).
    batch_size, lr, weight_decay, gradient_clip_val
        AdamW (β = 0.9, 0.95 as CellFM) with a linear warm-up and a cosine decay to 0.1·``lr`` per step;
        no weight decay on embeddings, norms and tokens.
    seed
        Seed of the initialisation, the validation split, the batch order and the masks; the same seed gives
        the same weights on the same hardware.
    %(section_key)s
        Used with ``presence_key``.
    presence_key
        var column listing, comma separated, the sections that measured each gene (``"sections"``, written by
        the sthinge dataset loaders). Tables without it (or without ``section_key``) count every gene they
        hold as measured; panel genes a table does not hold are missing for all its spots.
    val_fraction
        Fraction of the spots held out for the validation loss (fixed masks, so epochs are comparable).
    save
        Checkpoint path. Default: ``settings.cachedir / "backbones" / f"{name}-{recipe hash}{suffix}"``.
    overwrite
        Replace an existing file at ``save``; without it, that is an error raised before training. (sthinge's own
        cache, the default ``save``, is always rewritten.)
    format
        ``"pt"`` (default), ``"ckpt"`` (MindSpore) or ``"safetensors"``; see :func:`sthinge.io.save_cellfm`
        (CellFM only; an scGPT backbone is always a checkpoint folder).
    accelerator, devices, precision
        Passed to :class:`lightning.pytorch.Trainer`; ``precision=None`` picks ``"bf16-mixed"`` on a GPU that
        supports it, else ``"32-true"``.
    table_key
        Table of SpatialData objects (default: ``"table"`` or the only table).

    Returns
    -------
    The pre-trained :class:`~sthinge.models.cellfm.CellFM` or :class:`~sthinge.models.scgpt.ScGPT` (CPU, eval
    mode), with two extra attributes:
    ``sthinge_path``, the checkpoint written, and ``sthinge_pretrain``, a dict with the panel (``"genes"``),
    the per-epoch ``"history"`` (``train_loss``, ``val_loss``, ``lr``), ``"initial_val_loss"`` and
    ``"final_val_loss"`` (before the first and after the last step, with the same masks), the settings and the
    runtime. The same dict is written beside the checkpoint as
    ``<checkpoint>.json``.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(image=False)
    >>> net = st.tl.pretrain_backbone(sdata, preset="tiny", max_epochs=2)  # doctest: +SKIP
    >>> model = st.tl.fit(sdata, backbone=net.sthinge_path)  # doctest: +SKIP
    """
    import torch
    from torch.utils.data import DataLoader

    from sthinge._settings import settings
    from sthinge._vocab import _vocab_size, cellfm_vocab
    from sthinge.tl import _corpus as C
    from sthinge.tl._backbone import _family, _resolve_config
    from sthinge.tl._data import split_rows
    from sthinge.tl._train import PretrainLightning, StepProgress, resolve_precision, run_trainer

    # ---- validate everything before any work ----------------------------------------------------------
    vocab_size = _vocab_size(vocab)
    config = _resolve_config(preset, vocab_size)
    mask_ratio = _check_float("mask_ratio", mask_ratio, low=0.0, high=0.95, low_open=True)
    if n_tokens is not None:
        n_tokens = _check_int("n_tokens", n_tokens, low=1)
    spec = TrainerSpec.checked(
        "pretrain_backbone", max_epochs, max_steps, accelerator, devices, "auto", precision, gradient_clip_val
    )
    max_epochs, max_steps = spec.max_epochs, spec.max_steps
    batch_size = _check_int("batch_size", batch_size, low=1)
    lr = _check_float("lr", lr, low=0.0, low_open=True)
    weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
    seed = _check_int("seed", seed, low=0)
    val_fraction = _check_float("val_fraction", val_fraction, low=0.0, high=0.5)
    _check_choice("format", format, tuple(_FORMATS))
    if save is not None and not isinstance(save, str | os.PathLike):
        raise TypeError(f"`save` must be a path or None, got {type(save).__name__}.")
    _check_save_target(save, overwrite=overwrite)  # an existing or unwritable destination fails now, not after training
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"`layer` must be a layer name or None, got {type(layer).__name__}.")
    tables = C._tables(data, table_key)
    if sum(t.n_obs for t in tables) == 0:
        raise ValueError("`data` has no spots or cells.")

    # ---- data -----------------------------------------------------------------------------------------
    start = time.perf_counter()
    symbols = cellfm_vocab(vocab_size)
    maps = [C._var_to_vocab(t, symbols) for t in tables]
    panel = C._choose_panel(tables, genes, symbols, maps)
    import lightning.pytorch as pl

    pl.seed_everything(seed, workers=True, verbose=False)
    family = _family(config)
    model = family.new(config, symbols)  # CellFM: the shipped vocabulary; scGPT: a stand-in one over `symbols`
    corpus = C._build_corpus(tables, panel, maps, model.gene_ids(panel), layer, section_key, presence_key)
    never = int((~corpus.present.any(0)).sum())
    if never:
        logg.warning(f"{never} panel gene(s) are measured in no spot of `data`; their embeddings stay untrained.")
    train_rows, val_rows = split_rows(corpus.n, val_fraction, seed)
    n_val = len(val_rows)

    def collate(idx):
        return C._batch_tensors(corpus, np.asarray(idx, dtype=np.int64))

    g = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(
        train_rows.tolist(),
        batch_size=batch_size,
        shuffle=True,
        generator=g,
        collate_fn=collate,
        drop_last=len(train_rows) > batch_size,
    )
    val_batches = [collate(val_rows[i : i + 256]) for i in range(0, n_val, 256)]
    val_dl = DataLoader(val_rows.tolist(), batch_size=256, collate_fn=collate) if n_val else None

    # ---- run ------------------------------------------------------------------------------------------
    lit = PretrainLightning(
        model, corpus.gene_ids, lr=lr, weight_decay=weight_decay, mask_ratio=mask_ratio, n_tokens=n_tokens, seed=seed
    )
    ids = torch.as_tensor(corpus.gene_ids, dtype=torch.long)
    fixed = dict(n_tokens=n_tokens, mask_ratio=mask_ratio, seed=seed)  # the same masks before and after
    initial = C.validation_loss(model, ids, val_batches, **fixed) if n_val else None
    precision = resolve_precision(precision)
    # one bar over the whole pre-training (elapsed < remaining) and a log line with the time left after epoch 1
    total = max_epochs * len(train_dl) if max_steps is None else min(max_steps, max_epochs * len(train_dl))
    run_trainer(
        lit,
        train_dl,
        val_dl,
        spec,
        callbacks=[StepProgress(total, max_epochs, "pre-training backbone", "pretrain_backbone")],
        loader_generator=g,
        resumable=False,
    )
    model = lit.model.cpu().eval()
    final = C.validation_loss(model, ids, val_batches, **fixed) if n_val else None
    runtime = time.perf_counter() - start

    # ---- save -------------------------------------------------------------------------------------------
    settings_used = {
        "preset": config.name,
        "vocab_size": vocab_size,
        "layer": layer,
        "sources": sorted(set(corpus.sources)),
        "mask_ratio": mask_ratio,
        "n_tokens": n_tokens,
        "max_epochs": max_epochs,
        "max_steps": max_steps,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "gradient_clip_val": gradient_clip_val,
        "seed": seed,
        "val_fraction": val_fraction,
        "precision": precision,
    }
    recipe = {"config": dataclasses.asdict(config), "settings": settings_used, "data": corpus.fingerprint()}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if save is None:
        save = settings.cachedir / "backbones" / f"{config.name}-{digest}{family.suffix(format)}"
    path = Path(save)
    path.parent.mkdir(parents=True, exist_ok=True)
    # checked before training: the cache is rewritten on purpose, a user's `save` only with `overwrite=True`
    family.save(model, path, format)
    from sthinge._version import __version__
    from sthinge.io._atomic import atomic_write

    info = {
        "sthinge_version": __version__,
        "config": dataclasses.asdict(config),
        "genes": panel,
        "n_spots": int(corpus.n),
        "n_train": int(len(train_rows)),
        "n_val": int(n_val),
        "settings": settings_used,
        "recipe": digest,
        "initial_val_loss": initial,
        "final_val_loss": final,
        "history": lit.history,
        "runtime_s": round(runtime, 1),
        "format": format,
    }
    with atomic_write(_sidecar(path)) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1))
    model.sthinge_path = path
    model.sthinge_pretrain = info
    losses = f"; validation loss {initial:.4f} -> {final:.4f}" if n_val else ""
    logg.info(
        f"pretrain_backbone: {len(lit.history)} epoch(s) on {corpus.n} spots x {len(panel)} genes in "
        f"{runtime:.0f} s{losses}; saved {path}."
    )
    return model


def _check_save_target(save: str | os.PathLike | None, name: str = "save", *, overwrite: bool = True) -> None:
    """Check before any work that the checkpoint can be written: ``save`` (an existing file only with
    ``overwrite``), else the cache folder (not created)."""
    from sthinge._settings import settings
    from sthinge._utils import _check_output_path

    if save is None:
        _check_output_path(
            "settings.cachedir (STHINGE_CACHE_DIR)", settings.cachedir / "backbones", overwrite=True, kind="folder"
        )
    else:
        _check_output_path(name, save, overwrite=overwrite)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")
