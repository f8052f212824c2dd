"""``tl.pretrain_backbone``: pre-train a CellFM backbone by masked value modelling on expression-only data.

The real CellFM weights are a gated download. This module trains a backbone of the same architecture and
checkpoint format from scratch (CellFM's own objective, see Method, :ref:`method-backbone`) on expression that needs no
images (e.g. Her2ST sections without H&E, or any scRNA-seq table), in the input regime HINGE uses it in:
a fixed gene panel whose every gene is a token (zeros included), with genes a section did not measure kept
out of the inputs and the loss. The checkpoint is written by :func:`sthinge.io.save_cellfm`, so
:func:`sthinge.io.load_cellfm` and ``tl.fit(backbone=path)`` treat it exactly like real CellFM weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg, quiet_lightning
from sthinge._settings import check_accelerator
from sthinge._utils import _check_choice, _check_float, _check_int, _resolve_table

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.models.cellfm import CellFM, CellFMConfig

__all__ = [
    "CPU_PRESETS",
    "HER2ST_RECIPE",
    "default_backbone",
    "default_backbone_path",
    "her2st_pretraining_sections",
    "pretrain_backbone",
    "pretrain_her2st",
]

CPU_PRESETS: dict[str, dict[str, Any]] = {
    "cpu-small": {"n_layers": 4, "d_model": 128, "n_heads": 8, "vocab_size": 27855, "name": "cpu-small"},
}
"""Backbone sizes for pre-training on a CPU, used when the name is not in :data:`sthinge.models.PRESETS`.

``"cpu-small"``: 4 layers (2 with CellFM's masked keys, 2 without), width 128, 8 heads of 16, CellFM's 256 value
bins and numerics, the 27,855-gene vocabulary (2.7 M parameters, 2.3 M of them the gene table).
"""

HER2ST_RECIPE: dict[str, Any] = {
    "preset": "cpu-small",
    "n_top": 1000,
    "n_tokens": 128,
    "max_epochs": 1,
    "batch_size": 32,
    "lr": 2e-3,
    "mask_ratio": 0.2,
    "val_fraction": 0.05,
    "seed": 0,
}
"""Settings of the default backbone (:func:`default_backbone`, ``scripts/pretrain_her2st.py``); see
``docs/pretraining.md``. Panel: HMHVG (``pp.select_genes``, ``n_top`` by mean AND by variance, CellFM 80M
vocabulary, measured in every section) of the Her2ST sections of all patients but C."""

HER2ST_HELD_OUT_PATIENT = "C"
_PRECISIONS = (None, "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "bf16-true")
_FORMATS = {"pt": ".pt", "ckpt": ".ckpt", "safetensors": ".safetensors"}
_NO_DECAY = ("gene_emb", "cls_token", "zero_emb", "value_enc.mask_emb", "ST_emb")
_VAL_SEED_OFFSET = 10_007


# ----------------------------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------------------------
def _resolve_config(preset: Any, vocab_size: int) -> CellFMConfig:
    """A :class:`CellFMConfig` from a preset name (models PRESETS, then CPU_PRESETS) or a config."""
    from sthinge.models.cellfm import PRESETS, CellFMConfig

    if isinstance(preset, CellFMConfig):
        config = preset
        if config.vocab_size != vocab_size:
            raise ValueError(
                f"`preset` has vocab_size={config.vocab_size} but `vocab` has {vocab_size} genes; pass a matching "
                "`vocab` or set `vocab_size` in the config."
            )
    elif isinstance(preset, str):
        if preset in PRESETS:
            config = dataclasses.replace(PRESETS[preset], vocab_size=vocab_size)
        elif preset in CPU_PRESETS:
            config = CellFMConfig(**{**CPU_PRESETS[preset], "vocab_size": vocab_size})
        else:
            raise ValueError(
                f"Unknown `preset` {preset!r}; expected one of {sorted({*PRESETS, *CPU_PRESETS})} or a CellFMConfig."
            )
    else:
        raise TypeError(f"`preset` must be a preset name or a CellFMConfig, got {type(preset).__name__}.")
    if config.st_tokens:
        raise ValueError(
            f"`preset` {config.name!r} has CellFM-80M's read-depth (S-T) tokens, which HINGE does not use; pre-train "
            f"without them, e.g. `CellFMConfig.from_preset({config.name!r}, st_tokens=False)`."
        )
    return config


def _tables(data: Any, table_key: str | None) -> list[AnnData]:
    if isinstance(data, list | tuple):
        if not data:
            raise ValueError("`data` is an empty list; pass at least one AnnData or SpatialData.")
        return [_resolve_table(d, table_key)[0] for d in data]
    return [_resolve_table(data, table_key)[0]]


# ----------------------------------------------------------------------------------------------------------
# gene panel and values
# ----------------------------------------------------------------------------------------------------------
def _var_to_vocab(table: AnnData, vocab: tuple[str, ...]) -> dict[str, int]:
    """``{vocabulary symbol: column of the table}`` (exact names, then CellFM's renames; exact matches win)."""
    from sthinge.pp._aliases import map_to_vocab

    names = table.var_names.astype(str).tolist()
    mapped, how = map_to_vocab(names, vocab)
    out: dict[str, int] = {}
    for i in sorted(range(len(names)), key=lambda i: (how[i] != "exact", i)):
        if mapped[i] is not None and mapped[i] not in out:
            out[mapped[i]] = i
    return out


def _choose_panel(tables: list[AnnData], genes: Sequence[str] | None, vocab: tuple[str, ...],
                  maps: list[dict[str, int]]) -> list[str]:
    """The panel as vocabulary symbols in vocabulary order (ascending CellFM id)."""
    from sthinge.pp._aliases import map_to_vocab
    from sthinge.tl._data import _panel, _panel_symbols

    if genes is None and K.GENES_KEY in tables[0].uns:
        names = _panel(tables[0], K.GENES_KEY)
        genes = _panel_symbols(tables[0], K.GENES_KEY, names)
    if genes is None:
        chosen = set().union(*(m.keys() for m in maps))
        if not chosen:
            raise ValueError("No gene of `data` is in the CellFM vocabulary; check that var_names are gene symbols.")
    else:
        if isinstance(genes, str) or not isinstance(genes, Sequence | np.ndarray):
            raise TypeError(f"`genes` must be a list of gene symbols or None, got {type(genes).__name__}.")
        genes = [str(g) for g in genes]
        if not genes:
            raise ValueError("`genes` is empty.")
        mapped, _ = map_to_vocab(genes, vocab)
        outside = [g for g, m in zip(genes, mapped, strict=True) if m is None]
        if outside:
            raise ValueError(
                f"{len(outside)} gene(s) of `genes` are not in the {len(vocab)}-gene CellFM vocabulary: "
                f"{outside[:10]}."
            )
        chosen = set(mapped)
    rank = {g: i for i, g in enumerate(vocab)}
    return sorted(chosen, key=rank.__getitem__)


def _is_integer(matrix) -> bool:
    from sthinge.pp._common import _values

    v = _values(matrix)
    return not np.issubdtype(v.dtype, np.floating) or bool(np.array_equal(v, np.round(v)))


def _log_values(table: AnnData, layer: str | None, index: int):
    """Log-normalised expression of all genes of ``table`` (sparse or dense) and a description of its source."""
    import scipy.sparse as sp

    from sthinge.pp._common import _check_counts, _log1p_cp10k, _values

    where = f"table {index}" if index else "the table"
    if layer is None:
        info = table.uns.get(K.UNS_NORMALIZE)
        if isinstance(info, dict) and info.get("key_added") in table.layers:
            layer = str(info["key_added"])
        else:
            if table.X is None:
                raise ValueError(f"{where} has no `X`; pass `layer=` naming a log-normalised layer.")
            if not _is_integer(table.X):
                raise ValueError(
                    f"`X` of {where} is not raw counts (it holds non-integer values) and no `pp.normalize` layer was "
                    "found: run `sthinge.pp.normalize(data)` on the raw counts, or pass `layer=` naming a layer of "
                    "log-normalised expression."
                )
            _check_counts(table.X, what=f"`X` of {where} (raw counts)")
            return _log1p_cp10k(table.X), "X (ln(1+CP10k) on the fly)"
    if layer not in table.layers:
        raise KeyError(f"`layer` {layer!r} not found in {where}; available layers: {list(table.layers)}.")
    x = table.layers[layer]
    v = _values(x)
    if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
        raise ValueError(f"`layers[{layer!r}]` of {where} holds NaN or infinite values.")
    if (v < 0).any():
        raise ValueError(f"`layers[{layer!r}]` of {where} holds negative values; expected log-normalised expression.")
    if v.size and _is_integer(x) and v.max() > 20:
        raise ValueError(
            f"`layers[{layer!r}]` of {where} looks like raw integer counts; pass `layer=None` (ln(1+CP10k) is then "
            "computed from the counts in `X`) or run `sthinge.pp.normalize(data)` first."
        )
    return (sp.csr_matrix(x) if sp.issparse(x) else np.asarray(x)), f"layers[{layer!r}]"


def _presence(table: AnnData, cols: np.ndarray, section_key: str, presence_key: str | None, index: int):
    """Per-row group ids (n,) and group presence (n_groups, G) bool: which panel genes each section measured."""
    has = cols >= 0  # panel genes that the table has at all
    n = table.n_obs
    if presence_key is None or presence_key not in table.var or section_key not in table.obs:
        return np.zeros(n, dtype=np.int64), has[None, :], None
    listed = [set(str(s).split(",")) if isinstance(s, str) and s else set() for s in table.var[presence_key]]
    known = set().union(*listed) if listed else set()
    labels = table.obs[section_key].astype(str).to_numpy()
    sections, group = np.unique(labels, return_inverse=True)
    pres = np.zeros((len(sections), len(cols)), dtype=bool)
    for k, s in enumerate(sections):
        if s not in known:
            logg.warning(f"section {s!r} of table {index} appears in no `var[{presence_key!r}]` entry: all its genes "
                         "are treated as measured.")
            pres[k] = has
            continue
        pres[k] = [c >= 0 and s in listed[c] for c in cols]
    return group.astype(np.int64), pres, sections


@dataclasses.dataclass
class _Corpus:
    """Training rows: values (n, G) CSR float32, missing genes by group, and the gene panel's CellFM ids."""

    values: Any  # scipy.sparse.csr_matrix (n, G)
    group: np.ndarray  # (n,) int64
    present: np.ndarray  # (n_groups, G) bool
    gene_ids: np.ndarray  # (G,) int64
    sources: list[str]

    @property
    def n(self) -> int:
        return self.values.shape[0]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for arr in (self.values.indptr, self.values.indices, self.values.data, self.group, self.present,
                    self.gene_ids):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()


def _build_corpus(tables: list[AnnData], panel: list[str], maps: list[dict[str, int]], gene_ids: list[int],
                  layer: str | None, section_key: str, presence_key: str | None) -> _Corpus:
    import scipy.sparse as sp

    blocks, groups, presents, sources = [], [], [], []
    offset = 0
    for i, (table, m) in enumerate(zip(tables, maps, strict=True)):
        if table.n_obs == 0:
            continue
        cols = np.array([m.get(g, -1) for g in panel], dtype=np.int64)
        x, source = _log_values(table, layer, i)
        sources.append(source)
        # (n, V_t) -> (n, G): a selection matrix puts table column cols[j] into panel column j (zeros if absent)
        j = np.flatnonzero(cols >= 0)
        select = sp.csr_matrix((np.ones(j.size, np.float32), (cols[j], j)), shape=(table.n_vars, len(panel)))
        block = sp.csr_matrix(sp.csr_matrix(x, dtype=np.float32) @ select, dtype=np.float32)
        group, present, _ = _presence(table, cols, section_key, presence_key, i)
        block = sp.csr_matrix(block.multiply(present[group]), dtype=np.float32)  # missing genes hold 0
        blocks.append(block)
        groups.append(group + offset)
        presents.append(present)
        offset += present.shape[0]
    if not blocks:
        raise ValueError("`data` has no spots or cells.")
    values = sp.vstack(blocks, format="csr")
    group = np.concatenate(groups)
    present = np.concatenate(presents, axis=0)
    values.eliminate_zeros()
    # drop rows without a measured panel gene or with zero expression over the panel (nothing to reconstruct)
    keep = (present[group].sum(1) > 0) & (np.diff(values.indptr) > 0)
    if not keep.all():
        logg.info(f"pretrain_backbone: dropping {int((~keep).sum())} spot(s) with no expression in the panel.")
    if not keep.any():
        raise ValueError("No spot or cell of `data` has expression in the gene panel.")
    return _Corpus(values[keep], group[keep], present, np.asarray(gene_ids, dtype=np.int64), sources)


# ----------------------------------------------------------------------------------------------------------
# Lightning
# ----------------------------------------------------------------------------------------------------------
def _batch_tensors(corpus: _Corpus, rows: np.ndarray):
    """Dense (B, G) values and (B, G) missing flags of ``rows``."""
    import torch

    values = torch.from_numpy(corpus.values[rows].toarray())
    missing = torch.from_numpy(~corpus.present[corpus.group[rows]])
    return values, missing


def _tokens(gene_ids, values, missing, n_tokens: int | None, generator):
    """(B, L) ids, values and pad flags: every panel gene, or ``n_tokens`` per row drawn at random (measured
    genes first)."""
    import torch

    B, G = values.shape
    if n_tokens is None or n_tokens >= G:
        return gene_ids.expand(B, G), values, missing
    noise = torch.rand(B, G, generator=generator).to(values.device)
    noise = noise.masked_fill(missing, 2.0)  # missing genes are drawn only when a row has too few measured ones
    cols = noise.argsort(dim=1)[:, :n_tokens].sort(dim=1).values  # (B, L)
    return gene_ids[cols], values.gather(1, cols), missing.gather(1, cols)


def _loss(model, gene_ids, values, missing, *, n_tokens, mask_ratio, generator):
    from sthinge.models.cellfm import masked_value_loss

    ids, vals, pad = _tokens(gene_ids, values, missing, n_tokens, generator)
    return masked_value_loss(model, ids, vals, pad, mask_ratio=mask_ratio, generator=generator)


def _evaluate(model, gene_ids, batches, *, n_tokens, mask_ratio, seed) -> float:
    """Mean masked loss over ``batches`` with fixed masks (the same draws every call), weighted by rows."""
    import torch

    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = gene_ids.device
    with torch.no_grad():
        for k, (values, missing) in enumerate(batches):
            g = torch.Generator().manual_seed(seed + _VAL_SEED_OFFSET + k)
            loss = _loss(model, gene_ids, values.to(device), missing.to(device), n_tokens=n_tokens,
                         mask_ratio=mask_ratio, generator=g)
            total += float(loss) * values.shape[0]
            count += values.shape[0]
    model.train(was_training)
    return total / max(count, 1)


def _lightning_module_class():
    import lightning.pytorch as pl
    import torch

    class PretrainLightning(pl.LightningModule):
        """CellFM masked value modelling: AdamW (β = 0.9, 0.95), linear warm-up then cosine decay per step."""

        def __init__(self, model, gene_ids, *, lr, weight_decay, mask_ratio, n_tokens, seed):
            super().__init__()
            self.model = model
            self.register_buffer("gene_ids", torch.as_tensor(gene_ids, dtype=torch.long), persistent=False)
            self.lr, self.weight_decay = lr, weight_decay
            self.mask_ratio, self.n_tokens, self.seed = mask_ratio, n_tokens, seed
            self.generator = torch.Generator().manual_seed(seed + 1)
            self.history: list[dict[str, float]] = []
            self._losses: list[float] = []
            self._val: list[tuple[float, int]] = []

        def training_step(self, batch, batch_idx):
            values, missing = batch
            loss = _loss(self.model, self.gene_ids, values, missing, n_tokens=self.n_tokens,
                         mask_ratio=self.mask_ratio, generator=self.generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The pre-training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                    "lower `lr` or use precision='32-true'."
                )
            self._losses.append(float(loss.detach()))
            self.log("loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=values.shape[0])
            return loss

        def validation_step(self, batch, batch_idx):
            values, missing = batch
            g = torch.Generator().manual_seed(self.seed + _VAL_SEED_OFFSET + batch_idx)
            loss = _loss(self.model, self.gene_ids, values, missing, n_tokens=self.n_tokens,
                         mask_ratio=self.mask_ratio, generator=g)
            self._val.append((float(loss), int(values.shape[0])))

        def on_validation_epoch_end(self):
            if self._val:
                value = sum(v * n for v, n in self._val) / sum(n for _, n in self._val)
                self._val.clear()
                self.log("val_loss", value, prog_bar=True)

        def on_train_epoch_end(self):
            entry = {"epoch": float(self.current_epoch), "lr": float(self.optimizers().param_groups[0]["lr"])}
            if self._losses:
                entry["train_loss"] = float(np.mean(self._losses))
            val = self.trainer.callback_metrics.get("val_loss")
            if val is not None:
                entry["val_loss"] = float(val)
            self._losses.clear()
            self.history.append(entry)

        def configure_optimizers(self):
            decay, no_decay = [], []
            for name, p in self.model.named_parameters():
                (no_decay if name in _NO_DECAY or p.ndim < 2 else decay).append(p)
            groups = [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
            opt = torch.optim.AdamW(groups, lr=self.lr, betas=(0.9, 0.95), eps=1e-8)
            total = max(int(self.trainer.estimated_stepping_batches), 1)
            warmup = max(1, min(100, total // 20))

            def factor(step: int) -> float:
                if step < warmup:
                    return (step + 1) / warmup
                progress = min(1.0, (step - warmup) / max(1, total - warmup))
                return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    return PretrainLightning


# ----------------------------------------------------------------------------------------------------------
# public API
# ----------------------------------------------------------------------------------------------------------
@_doc
def pretrain_backbone(
    data: AnnData | SpatialData | Sequence[AnnData | SpatialData],
    *,
    preset: str | CellFMConfig = "tiny",
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
) -> CellFM:
    """Pre-train a CellFM backbone from scratch by masked value modelling on expression-only data.

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
        CellFM-80M's read-depth tokens are refused.
    genes
        The gene panel (symbols; mapped to the vocabulary). Default: the panel ``uns["sthinge_genes"]`` of the
        first table (``pp.select_genes``) if present, else every gene of ``data`` in the vocabulary.
    vocab
        CellFM vocabulary of the backbone: ``"cellfm-80m"`` (27,855 genes) or ``"cellfm-800m"`` (24,078).
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
        ``"pt"`` (default), ``"ckpt"`` (MindSpore) or ``"safetensors"``; see :func:`sthinge.io.save_cellfm`.
    accelerator, devices, precision
        Passed to :class:`lightning.pytorch.Trainer`; ``precision=None`` picks ``"bf16-mixed"`` on a GPU that
        supports it, else ``"32-true"``.
    table_key
        Table of SpatialData objects (default: ``"table"`` or the only table).

    Returns
    -------
    The pre-trained :class:`~sthinge.models.cellfm.CellFM` (CPU, eval mode), with two extra attributes:
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
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from sthinge._settings import settings
    from sthinge._vocab import _vocab_size, cellfm_gene_ids, cellfm_vocab
    from sthinge.io._cellfm import save_cellfm
    from sthinge.models.cellfm import CellFM

    # ---- validate everything before any work ----------------------------------------------------------
    vocab_size = _vocab_size(vocab)
    config = _resolve_config(preset, vocab_size)
    mask_ratio = _check_float("mask_ratio", mask_ratio, low=0.0, high=0.95, low_open=True)
    if n_tokens is not None:
        n_tokens = _check_int("n_tokens", n_tokens, low=1)
    max_epochs = _check_int("max_epochs", max_epochs, low=1)
    if max_steps is not None:
        max_steps = _check_int("max_steps", max_steps, low=1)
    batch_size = _check_int("batch_size", batch_size, low=1)
    lr = _check_float("lr", lr, low=0.0, low_open=True)
    weight_decay = _check_float("weight_decay", weight_decay, low=0.0)
    if gradient_clip_val is not None:
        gradient_clip_val = _check_float("gradient_clip_val", gradient_clip_val, low=0.0, low_open=True)
    seed = _check_int("seed", seed, low=0)
    val_fraction = _check_float("val_fraction", val_fraction, low=0.0, high=0.5)
    _check_choice("format", format, tuple(_FORMATS))
    _check_choice("precision", precision, _PRECISIONS)
    check_accelerator(accelerator, devices)
    if save is not None and not isinstance(save, str | os.PathLike):
        raise TypeError(f"`save` must be a path or None, got {type(save).__name__}.")
    _check_save_target(save, overwrite=overwrite)  # an existing or unwritable destination fails now, not after training
    if layer is not None and not isinstance(layer, str):
        raise TypeError(f"`layer` must be a layer name or None, got {type(layer).__name__}.")
    tables = _tables(data, table_key)
    if sum(t.n_obs for t in tables) == 0:
        raise ValueError("`data` has no spots or cells.")

    start = time.perf_counter()
    symbols = cellfm_vocab(vocab_size)
    maps = [_var_to_vocab(t, symbols) for t in tables]
    panel = _choose_panel(tables, genes, symbols, maps)
    gene_ids = cellfm_gene_ids(panel, vocab_size)
    corpus = _build_corpus(tables, panel, maps, gene_ids, layer, section_key, presence_key)
    never = int((~corpus.present.any(0)).sum())
    if never:
        logg.warning(f"{never} panel gene(s) are measured in no spot of `data`; their embeddings stay untrained.")

    # ---- split, model, loaders ------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    order = rng.permutation(corpus.n)
    n_val = min(int(round(val_fraction * corpus.n)), corpus.n - 1) if val_fraction > 0 else 0
    val_rows, train_rows = np.sort(order[:n_val]), np.sort(order[n_val:])

    pl.seed_everything(seed, workers=True, verbose=False)
    model = CellFM(config)
    lit = _lightning_module_class()(model, corpus.gene_ids, lr=lr, weight_decay=weight_decay, mask_ratio=mask_ratio,
                                    n_tokens=n_tokens, seed=seed)

    def collate(idx):
        return _batch_tensors(corpus, np.asarray(idx, dtype=np.int64))

    g = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(train_rows.tolist(), batch_size=batch_size, shuffle=True, generator=g, collate_fn=collate,
                          drop_last=len(train_rows) > batch_size)
    val_batches = [collate(val_rows[i:i + 256]) for i in range(0, n_val, 256)]
    val_dl = DataLoader(val_rows.tolist(), batch_size=256, collate_fn=collate) if n_val else None
    initial = None
    if n_val:
        initial = _evaluate(model, lit.gene_ids, val_batches, n_tokens=n_tokens, mask_ratio=mask_ratio, seed=seed)

    if precision is None:
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    # one bar over the whole pre-training (elapsed < remaining) and a log line with the time left after epoch 1
    total = max_epochs * len(train_dl) if max_steps is None else min(max_steps, max_epochs * len(train_dl))
    callbacks = [_progress_callback(total, max_epochs)]
    with quiet_lightning():  # no start-up chatter from Lightning below verbosity 3
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            max_steps=-1 if max_steps is None else max_steps,
            accelerator=accelerator,
            devices=devices,
            precision=precision,
            gradient_clip_val=gradient_clip_val,
            callbacks=callbacks,
            enable_progress_bar=False,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if val_dl is not None else 0,
        )

    with quiet_lightning():
        trainer.fit(lit, train_dataloaders=train_dl, val_dataloaders=val_dl)
    model = lit.model.cpu().eval()
    final = None
    if n_val:  # the same fixed masks as `initial`, also when `max_steps` ends training within an epoch
        ids = torch.as_tensor(corpus.gene_ids, dtype=torch.long)
        final = _evaluate(model, ids, val_batches, n_tokens=n_tokens, mask_ratio=mask_ratio, seed=seed)
    runtime = time.perf_counter() - start

    # ---- save -------------------------------------------------------------------------------------------
    settings_used = {
        "preset": config.name, "vocab_size": vocab_size, "layer": layer, "sources": sorted(set(corpus.sources)),
        "mask_ratio": mask_ratio, "n_tokens": n_tokens, "max_epochs": max_epochs, "max_steps": max_steps,
        "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay, "gradient_clip_val": gradient_clip_val,
        "seed": seed, "val_fraction": val_fraction, "precision": precision,
    }
    recipe = {"config": dataclasses.asdict(config), "settings": settings_used, "data": corpus.fingerprint()}
    digest = hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()[:12]
    if save is None:
        save = settings.cachedir / "backbones" / f"{config.name}-{digest}{_FORMATS[format]}"
    path = Path(save)
    path.parent.mkdir(parents=True, exist_ok=True)
    # checked before training: the cache is rewritten on purpose, a user's `save` only with `overwrite=True`
    save_cellfm(model, path, format=format, overwrite=True)
    from sthinge._version import __version__

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
    from sthinge.io._atomic import atomic_write

    with atomic_write(_sidecar(path)) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1))
    model.sthinge_path = path
    model.sthinge_pretrain = info
    losses = f"; validation loss {initial:.4f} -> {final:.4f}" if n_val else ""
    logg.info(f"pretrain_backbone: {len(lit.history)} epoch(s) on {corpus.n} spots x {len(panel)} genes in "
              f"{runtime:.0f} s{losses}; saved {path}.")
    return model


def _progress_callback(total_steps: int, max_epochs: int):
    """A Lightning callback showing pre-training progress: one bar over all ``total_steps`` training steps with
    the estimated time left (``sthinge._logging.progress``: hidden below verbosity 2), and after the first epoch
    an INFO line with the estimate, which also reaches a log file where a bar does not."""
    import lightning.pytorch as pl

    from sthinge._logging import progress

    class PretrainProgress(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            self.start = time.perf_counter()
            self.bar = progress(None, total=total_steps, desc="pre-training backbone", unit="step")

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.bar.update(1)

        def on_train_epoch_end(self, trainer, pl_module):
            epoch = trainer.current_epoch + 1
            self.bar.set_postfix_str(f"epoch {epoch}/{max_epochs}")
            done = trainer.global_step
            if epoch == 1 and 0 < done < total_steps:
                took = time.perf_counter() - self.start
                self.bar.clear()  # the log line on a line of its own, the bar below it
                logg.info(f"pretrain_backbone: epoch 1 of {max_epochs} took {_duration(took)}; about "
                          f"{_duration(took / done * (total_steps - done))} left.")
                self.bar.refresh()

        def on_train_end(self, trainer, pl_module):
            self.bar.close()

    return PretrainProgress()


def _duration(seconds: float) -> str:
    """``"45 s"``, ``"13 min"`` or ``"1.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _check_save_target(save: str | os.PathLike | None, name: str = "save", *, overwrite: bool = True) -> None:
    """Check before any work that the checkpoint can be written: ``save`` (an existing file only with
    ``overwrite``), else the cache folder (not created)."""
    from sthinge._settings import settings
    from sthinge._utils import _check_output_path

    if save is None:
        _check_output_path("settings.cachedir (STHINGE_CACHE_DIR)", settings.cachedir / "backbones", overwrite=True,
                           kind="folder")
    else:
        _check_output_path(name, save, overwrite=overwrite)


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


# ----------------------------------------------------------------------------------------------------------
# the default backbone: Her2ST without the held-out patient C
# ----------------------------------------------------------------------------------------------------------
def her2st_pretraining_sections() -> list[str]:
    """The Her2ST sections used to pre-train the default backbone: every section except patient C's."""
    from sthinge.datasets import HER2ST_SECTIONS

    return [s for s in HER2ST_SECTIONS if not s.startswith(HER2ST_HELD_OUT_PATIENT)]


def pretrain_her2st(
    *,
    save: str | os.PathLike | None = None,
    overwrite: bool = False,
    preset: str | CellFMConfig | None = None,
    max_epochs: int | None = None,
    path: str | os.PathLike | None = None,
    **overrides: Any,
) -> CellFM:
    """Pre-train a backbone on the Her2ST sections of every patient but C (expression only).

    Settings are :data:`HER2ST_RECIPE`; the panel is ``pp.select_genes(n_top=HER2ST_RECIPE["n_top"])`` on those
    sections (computed on a copy of the table), so no information about patient C enters the backbone.

    Parameters
    ----------
    save
        Checkpoint path (default: the cache, see :func:`pretrain_backbone`).
    overwrite
        Replace an existing file at ``save`` (checked before any work).
    preset, max_epochs
        Override the recipe's backbone size and epochs.
    path
        Her2ST folder (default: ``settings.datadir``, else the download cache).
    **overrides
        Further arguments of :func:`pretrain_backbone` (``n_tokens``, ``batch_size``, ``lr``, ``seed``, ...).

    Returns
    -------
    The backbone, as :func:`pretrain_backbone` returns it.
    """
    from sthinge.datasets import her2st
    from sthinge.pp import select_genes

    _check_save_target(save, overwrite=overwrite)  # before reading (or downloading) Her2ST and training
    recipe = dict(HER2ST_RECIPE)
    n_top = recipe.pop("n_top")
    if preset is not None:
        recipe["preset"] = preset
    if max_epochs is not None:
        recipe["max_epochs"] = max_epochs
    recipe.update(overrides)
    sdata = her2st(her2st_pretraining_sections(), path=path)
    table = sdata.tables[K.TABLE_KEY]
    panel = select_genes(table, n_top=n_top, vocab="cellfm-80m", copy=True)
    genes = list(panel.uns[f"{K.GENES_KEY}_params"]["symbols"])
    return pretrain_backbone(table, genes=genes, vocab="cellfm-80m", save=save, overwrite=overwrite, **recipe)


def default_backbone_path() -> Path:
    """Cache path of the default backbone: ``settings.cachedir / "backbones" / "her2st-<preset>-<hash>.pt"``.

    The hash covers :data:`HER2ST_RECIPE`, :data:`CPU_PRESETS` and the sthinge version, so a changed recipe builds
    a new file instead of reusing a stale one.
    """
    from sthinge._settings import settings
    from sthinge._version import __version__

    key = json.dumps({"recipe": HER2ST_RECIPE, "presets": CPU_PRESETS, "version": __version__}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return settings.cachedir / "backbones" / f"her2st-{HER2ST_RECIPE['preset']}-{digest}.pt"


def default_backbone(*, path: str | os.PathLike | None = None, rebuild: bool = False) -> Path:
    """The default pre-trained backbone: a cached checkpoint, built from Her2ST (patients other than C) if absent.

    Parameters
    ----------
    path
        Where the checkpoint lives. Default: :func:`default_backbone_path`.
    rebuild
        Pre-train again even if the file exists.

    Returns
    -------
    Path of the checkpoint, for ``tl.fit(data, backbone=path)``.
    """
    default = path is None
    path = default_backbone_path() if default else Path(path)
    if path.is_file() and not rebuild:
        logg.info(f"default_backbone: using the cached {path}.")
        return path
    # the checkpoint is written after a long pre-training: refuse an unwritable destination now
    _check_save_target(None if default else path, name="path")
    logg.info(f"default_backbone: pre-training the default backbone on Her2ST (patients other than C) into {path}; "
              "this runs once (2-3 min on 2 idle CPU cores) and is cached for later runs.")
    pretrain_her2st(save=path, overwrite=True)  # absent, or `rebuild=True` asked for a new one
    return path
