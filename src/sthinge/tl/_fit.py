"""``tl.fit``: train HINGE (frozen backbone + SoftAdaLN) on a SpatialData / AnnData table with Lightning."""

from __future__ import annotations

import copy as _copy
import dataclasses
import functools
import math
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg, quiet_lightning
from sthinge._settings import check_accelerator
from sthinge._utils import _check_choice, _check_float, _check_int, _resolve_table

_PRECISIONS = (None, "32-true", "32", "bf16-mixed", "16-mixed", "64-true", "bf16-true")
_VAL_METRICS = ("mse", "loss")


# ----------------------------------------------------------------------------------------------------------
# backbone resolution
# ----------------------------------------------------------------------------------------------------------
def _without_read_depth_tokens(net):
    """HINGE reads only CLS and the gene tokens: a backbone with CellFM-80M's two read-depth tokens (``ST_emb``,
    ``ST_enc``) is rebuilt without them, as the official HINGE code ignores them when loading the 80M weights."""
    if not net.config.st_tokens:
        return net
    from sthinge.tl._model import _rebuild

    logg.info("backbone: the read-depth tokens of the CellFM-80M weights (`ST_emb`, `ST_enc`) are not used by HINGE "
              "(as in the official code); the backbone runs with its CLS and gene tokens only.")
    return _rebuild(net, dataclasses.replace(net.config, st_tokens=False))


def _resolve_backbone(backbone: Any, weights: str | os.PathLike | None):
    """Return ``(CellFM, source)`` for a preset name (+ weights), a CellFM module, or a checkpoint path."""
    from sthinge.io._cellfm import load_cellfm
    from sthinge.models import PRESETS, CellFM
    from sthinge.tl._model import _sha256

    if isinstance(backbone, CellFM):
        if weights is not None:
            raise ValueError("`weights` is only used with a preset name for `backbone`; got a CellFM module.")
        return _without_read_depth_tokens(_copy.deepcopy(backbone)), {"kind": "weights", "name": backbone.config.name}
    if isinstance(backbone, str) and backbone in PRESETS:
        if weights is None:
            logg.warning(
                f"`backbone={backbone!r}` without `weights`: the backbone is randomly initialised (no pre-training). "
                "Pass `weights=` (a CellFM .ckpt/.pt or a backbone from `tl.pretrain_backbone`) for real use."
            )
            return CellFM.from_preset(backbone), {"kind": "weights", "name": backbone, "random": True}
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"`weights` file {str(path)!r} not found.")
        net = _without_read_depth_tokens(load_cellfm(path, preset=backbone))
        return net, {"kind": "file", "path": str(path.resolve()), "sha256": _sha256(path) if path.is_file() else ""}
    if isinstance(backbone, str) and backbone == "default":
        if weights is not None:
            raise ValueError("`weights` does not apply to `backbone='default'` (sthinge's own pre-trained backbone).")
        from sthinge.tl._pretrain import default_backbone

        path = default_backbone()  # cached; pre-trained once on Her2ST (patients other than C) when absent
        net = _without_read_depth_tokens(load_cellfm(path))
        return net, {"kind": "file", "path": str(path.resolve()), "sha256": _sha256(path)}
    if isinstance(backbone, str | os.PathLike):
        path = Path(backbone)
        if not path.exists():
            raise ValueError(
                f"`backbone` must be a preset name ({sorted(PRESETS)}), 'default', a CellFM module or an existing "
                f"checkpoint path; got {str(backbone)!r}."
            )
        if weights is not None:
            raise ValueError("Pass either `backbone=<checkpoint path>` or `backbone=<preset>, weights=<path>`.")
        net = _without_read_depth_tokens(load_cellfm(path))
        return net, {"kind": "file", "path": str(path.resolve()), "sha256": _sha256(path) if path.is_file() else ""}
    raise TypeError(f"`backbone` must be a preset name, a CellFM module or a path, got {type(backbone).__name__}.")


def _hinge_config(config: Any, n_genes: int, cond_dim: int):
    from sthinge.models import HingeConfig

    if config is None:
        config = {}
    if isinstance(config, HingeConfig):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict of HingeConfig fields or a HingeConfig, got {type(config).__name__}.")
    fields = {f.name for f in dataclasses.fields(HingeConfig)}
    unknown = sorted(set(config) - fields)
    if unknown:
        allowed = sorted(fields - {"n_genes", "cond_dim"})
        raise ValueError(f"`config` has unknown field(s) {unknown}; allowed: {allowed}.")
    config = {**config, "n_genes": n_genes, "cond_dim": cond_dim}
    try:
        return HingeConfig(**config)
    except ValueError as err:
        raise ValueError(f"`config`: {err}") from err


# ----------------------------------------------------------------------------------------------------------
# random generator states (in checkpoints: plain tensors, ints and tuples, so they load with weights_only=True)
# ----------------------------------------------------------------------------------------------------------
def _rng_states(loader_generator=None) -> dict[str, Any]:
    """The states of every generator training draws from: torch (CPU and CUDA), numpy, python, the loader's."""
    import random

    import torch

    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the legacy global generator
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def _set_rng_states(state: dict[str, Any], loader_generator=None) -> None:
    import random

    import torch

    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],  # noqa: NPY002
                         np_state["has_gauss"], np_state["gauss"]))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def _nonfinite_weights(module) -> list[str]:
    import torch

    return [n for n, p in module.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]


# ----------------------------------------------------------------------------------------------------------
# Lightning
# ----------------------------------------------------------------------------------------------------------
def __getattr__(name: str):
    # the Lightning classes are defined lazily (Lightning is imported only by `fit`); spawn-based DDP pickles
    # them by name, so a worker process that unpickles `sthinge.tl._fit.HingeLightning` gets the same class
    if name == "HingeLightning":
        return _lightning_module_class()
    if name == "BestAndEarlyStop":
        return _stopper_class()
    if name == "LastCheckpoint":
        return _last_checkpoint_class()
    if name == "SafeCheckpointIO":
        return _checkpoint_io_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _lightning_module_class():
    import lightning.pytorch as pl
    import torch

    from sthinge.models import MaskSchedule, sample, training_loss

    class HingeLightning(pl.LightningModule):
        """Training loop of HINGE: masked-diffusion loss with the warm-start curriculum, AdamW, MultiStepLR."""

        def __init__(self, module, *, lr, weight_decay, milestones, gamma, curriculum_epochs, val_metric,
                     val_steps, loss_weight):
            super().__init__()
            self.module = module
            self.schedule = MaskSchedule.from_config(module.config)
            self.lr, self.weight_decay = lr, weight_decay
            self.milestones, self.gamma = list(milestones), gamma
            self.curriculum_epochs = curriculum_epochs
            self.val_metric, self.val_steps, self.loss_weight = val_metric, val_steps, loss_weight
            self.strict_loading = False  # checkpoints hold only the trainable weights
            self._epoch_losses: list[float] = []
            self._val: list[tuple[float, int]] = []
            self.history: list[dict[str, float]] = []
            self.loader_generator = None  # the training DataLoader's torch.Generator (its state is checkpointed)

        def training_step(self, batch, batch_idx):
            x0, cond = batch
            t_max = self.schedule.t_cap() if self.current_epoch < self.curriculum_epochs else None
            loss = training_loss(self.module, x0, cond, self.schedule, t_max=t_max, loss_weight=self.loss_weight)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"The training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                    "training stopped. Lower `lr`, check the inputs for extreme values, or use precision='32-true'."
                )
            self._epoch_losses.append(float(loss.detach()))
            self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=x0.shape[0])
            return loss

        def validation_step(self, batch, batch_idx):
            x0, cond = batch
            g = torch.Generator(device="cpu").manual_seed(1234 + batch_idx)
            if self.val_metric == "loss":
                value = training_loss(self.module, x0, cond, self.schedule, generator=g, loss_weight=self.loss_weight)
            else:
                mean, _ = sample(self.module, cond, schedule=self.schedule, n_steps=min(self.val_steps,
                                 self.schedule.n_steps), n_samples=1, batch_size=max(64, x0.shape[0]), generator=g)
                value = ((mean.float() - x0.float()) ** 2).mean()
            self._val.append((float(value), int(x0.shape[0])))

        def on_validation_epoch_end(self):
            if not self._val:
                return
            total = sum(n for _, n in self._val)
            value = sum(v * n for v, n in self._val) / total
            self._val.clear()
            distributed = self.trainer.world_size > 1
            if distributed:  # weighted mean over the validation spots of all ranks: every rank gets the same value
                s = torch.tensor([value * total, total], dtype=torch.float64, device=self.device)
                s = self.trainer.strategy.reduce(s, reduce_op="sum")
                value = float(s[0] / s[1])
            self.log("val", value, prog_bar=True, sync_dist=distributed)

        def on_train_epoch_end(self):
            bad = _nonfinite_weights(self.module)
            if bad:  # before the epoch's checkpoint is written: `last.ckpt` keeps the last good weights
                raise FloatingPointError(
                    f"{len(bad)} trainable weight(s) became NaN or infinite during epoch {self.current_epoch} "
                    f"(e.g. {bad[0]!r}); training stopped. Lower `lr` or check the inputs for extreme values."
                )
            entry = {"epoch": float(self.current_epoch), "lr": float(self.optimizers().param_groups[0]["lr"])}
            if self._epoch_losses:
                entry["train_loss"] = float(np.mean(self._epoch_losses))
                if self.trainer.world_size > 1:  # mean over ranks (each rank sees as many batches)
                    loss = torch.tensor(entry["train_loss"], dtype=torch.float64, device=self.device)
                    entry["train_loss"] = float(self.trainer.strategy.reduce(loss, reduce_op="mean"))
            val = self.trainer.callback_metrics.get("val")
            if val is not None:
                entry["val"] = float(val)
            self._epoch_losses.clear()
            self.history.append(entry)

        def configure_optimizers(self):
            params = [p for p in self.module.parameters() if p.requires_grad]
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay, betas=(0.9, 0.999), eps=1e-8)
            sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=self.milestones, gamma=self.gamma)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}

        def state_dict(self, *args, **kwargs):
            # only what is trained goes into Lightning checkpoints; the frozen backbone is a reference
            full = super().state_dict(*args, **kwargs)
            keep = {f"module.{n}" for n, p in self.module.named_parameters() if p.requires_grad}
            keep |= {f"module.{n}" for n, _ in self.module.named_buffers()}
            return type(full)((k, v) for k, v in full.items() if k in keep)

        def on_save_checkpoint(self, checkpoint):
            checkpoint["sthinge_history"] = list(self.history)
            checkpoint["sthinge_rng"] = _rng_states(self.loader_generator)

        def on_load_checkpoint(self, checkpoint):
            self.history = list(checkpoint.get("sthinge_history", []))
            # the generators continue exactly where the interrupted fit left them. Restored here, before Lightning
            # creates the first data iterator (which already draws from the loader's generator); nothing between
            # this hook and the first training batch draws random numbers
            if "sthinge_rng" in checkpoint:
                _set_rng_states(checkpoint["sthinge_rng"], self.loader_generator)

    HingeLightning.__qualname__ = "HingeLightning"  # picklable by name (see `__getattr__`)
    return HingeLightning


def _callbacks(patience: int, min_epochs: int, result_dir: str | None = None):
    return _stopper_class()(patience, min_epochs, result_dir)


@functools.cache
def _stopper_class():
    import lightning.pytorch as pl
    import torch

    class BestAndEarlyStop(pl.Callback):
        """Early stopping on the validation metric, checked only from ``min_epochs`` on (the paper's warm-up);
        keeps the best weights in memory and restores them at the end.

        With a spawn-based strategy (``ddp_spawn``, ``ddp_fork``) training runs in worker processes: each rank then
        writes its history and best epoch to ``result_dir/rank{r}.pt`` for the main process (Lightning itself sends
        rank 0's trainable weights back, after the best ones were restored here)."""

        def __init__(self, patience, min_epochs, result_dir=None):
            self.patience, self.min_epochs, self.result_dir = patience, min_epochs, result_dir
            self.main_pid = os.getpid()
            self.best = math.inf
            self.best_state = None
            self.best_epoch = -1
            self.bad = 0

        def on_validation_end(self, trainer, module):
            if trainer.sanity_checking:
                return
            val = trainer.callback_metrics.get("val")
            if val is None:
                return
            val = float(val)
            epoch = trainer.current_epoch
            if val < self.best:
                self.best, self.best_epoch, self.bad = val, epoch, 0
                self.best_state = {
                    n: p.detach().cpu().clone() for n, p in module.module.named_parameters() if p.requires_grad
                }
            elif epoch >= self.min_epochs:
                self.bad += 1
                if self.bad >= self.patience:
                    logg.info(f"early stopping at epoch {epoch}: no improvement for {self.patience} epochs")
                    trainer.should_stop = True

        def state_dict(self):
            # in Lightning checkpoints, so that a resumed fit stops early and restores the best epoch exactly as
            # an uninterrupted one would
            return {"best": float(self.best), "best_epoch": int(self.best_epoch), "bad": int(self.bad),
                    "best_state": self.best_state}

        def load_state_dict(self, state):
            self.best, self.best_epoch, self.bad = float(state["best"]), int(state["best_epoch"]), int(state["bad"])
            self.best_state = state["best_state"]

        def on_train_start(self, trainer, module):
            if self.bad >= self.patience:  # resumed from the checkpoint of a fit that had stopped early
                logg.info("the checkpoint is from a fit that had already stopped early: no further epochs")
                trainer.should_stop = True

        def on_fit_end(self, trainer, module):
            self.restore(module.module)
            if os.getpid() != self.main_pid and self.result_dir is not None:  # a worker process of ddp_spawn & co.
                result = {"history": list(module.history), "best": self.best, "best_epoch": self.best_epoch}
                torch.save(result, Path(self.result_dir) / f"rank{trainer.global_rank}.pt")

        def restore(self, module):
            if self.best_state is None:
                return
            with torch.no_grad():
                params = dict(module.named_parameters())
                for n, v in self.best_state.items():
                    params[n].copy_(v.to(params[n].device))

    BestAndEarlyStop.__qualname__ = "BestAndEarlyStop"  # picklable by name (see `__getattr__`)
    return BestAndEarlyStop


@functools.cache
def _last_checkpoint_class():
    from lightning.pytorch.callbacks import Checkpoint

    class LastCheckpoint(Checkpoint):
        """Write ``last.ckpt`` at the very end of every training epoch: after validation, early stopping and the
        history entry, and after the weights were checked to be finite. A :class:`Checkpoint` subclass, so that
        Lightning calls it after the module's own ``on_train_epoch_end``.

        The file holds the trainable weights, the optimizer and LR-scheduler states, the loop counters, the state
        of :class:`BestAndEarlyStop` (best weights, patience counter), the history and the states of all random
        generators, so a resumed fit continues exactly where this one stopped. Written by
        :class:`SafeCheckpointIO` (an interrupted write leaves the previous ``last.ckpt``)."""

        def __init__(self, path):
            self.path = str(path)

        def on_train_epoch_end(self, trainer, module):
            if not trainer.sanity_checking:
                trainer.save_checkpoint(self.path)

    LastCheckpoint.__qualname__ = "LastCheckpoint"  # picklable by name (see `__getattr__`)
    return LastCheckpoint


@functools.cache
def _checkpoint_io_class():
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class SafeCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoints written atomically (a temporary file beside the target, then :func:`os.replace`)
        and read with ``weights_only=True`` (:func:`sthinge.io.safe_torch_load`)."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            from sthinge.io import atomic_save

            if storage_options is not None:
                raise TypeError("`storage_options` is not supported by sthinge's checkpoints.")
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            atomic_save(checkpoint, path)

        def load_checkpoint(self, path, map_location=None, weights_only=None):
            from sthinge.io import safe_torch_load

            return safe_torch_load(path)  # always weights_only=True, on the CPU (Lightning moves states later)

    SafeCheckpointIO.__qualname__ = "SafeCheckpointIO"  # picklable by name (see `__getattr__`)
    return SafeCheckpointIO


def _collect_worker_results(result_dir: str, lit, stopper) -> None:
    """After a spawn-based DDP fit: take rank 0's history and best epoch; the ranks must agree on them."""
    import torch

    paths = sorted(Path(result_dir).glob("rank*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:  # trained in this process
        return
    results = [torch.load(p, weights_only=True) for p in paths]
    ranks = [int(p.stem[4:]) for p in paths]
    if ranks[0] != 0:
        raise RuntimeError("DDP training finished without results from rank 0.")
    for rank, res in zip(ranks[1:], results[1:]):
        if res["history"] != results[0]["history"] or res["best_epoch"] != results[0]["best_epoch"]:
            raise RuntimeError(f"DDP ranks 0 and {rank} disagree on the validation history / best epoch.")
    lit.history = list(results[0]["history"])
    stopper.best, stopper.best_epoch = float(results[0]["best"]), int(results[0]["best_epoch"])


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
        _check_overwrite(f"`checkpoint_dir` {str(checkpoint_dir)!r}: the checkpoint {str(last)!r} of an earlier fit",
                         last.exists(), overwrite, flag="resume=True` to continue from it, or `overwrite=True")
    _check_writable_dir("checkpoint_dir", checkpoint_dir)


def _last_good_note(checkpoint_dir: Path | None, history: list[dict[str, float]]) -> str:
    """Where the weights of the last completed epoch are, for the message of a diverged or interrupted fit."""
    if checkpoint_dir is None:
        return "Pass `checkpoint_dir=` to keep the state of the last completed epoch on disk."
    last = Path(checkpoint_dir) / "last.ckpt"
    if not last.is_file() or not history:
        return f"No epoch finished, so there is no checkpoint to continue from in {str(checkpoint_dir)!r}."
    return (
        f"The last good checkpoint (written at the end of epoch {int(history[-1]['epoch'])}) is {str(last)!r}; "
        "`resume=True` continues from it."
    )


class _Progress:
    @staticmethod
    def make():
        from lightning.pytorch.callbacks import TQDMProgressBar

        return TQDMProgressBar(leave=False)


# ----------------------------------------------------------------------------------------------------------
@_doc
def fit(
    data,
    *,
    backbone: Any = "tiny",
    weights: str | os.PathLike | None = None,
    config: dict | Any | None = None,
    embedding_key: str = K.embedding_key(K.DEFAULT_ENCODER),
    genes_key: str = K.GENES_KEY,
    layer: str | None = None,
    train_sections: Sequence[str] | None = None,
    section_key: str = K.SECTION_KEY,
    val_fraction: float = 0.1,
    max_epochs: int = 50,
    batch_size: int = 32,
    lr: float = 1e-4,
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
    table_key: str | None = None,
):
    """Train HINGE on the spots of ``data``: a frozen expression backbone adapted by SoftAdaLN to histology.

    The defaults are the paper's (App. A.6): AdamW with ``lr=1e-4`` and no weight decay, batch 32, MultiStepLR at
    epochs 20 and 30 (x0.2), at most 50 epochs with early stopping (patience 5, checked from epoch 15 on, on the
    validation MSE of predictions sampled with ``val_steps`` steps), the warm-start curriculum (mask ratio
    <= 20 %) for 5 epochs, and gradient clipping at 1.0 as in the official code. The one default that is
    sthinge's own is the loss weighting (``loss_weight``, measured better than both the paper's and the code's).

    Parameters
    ----------
    data
        SpatialData or AnnData with normalised expression (``pp.normalize``), a gene panel (``pp.select_genes``)
        and spot embeddings (``pp.embed_histology``).
    backbone
        A preset name (``"tiny"``, ``"cellfm-80m"``, ``"cellfm-800m"``) together with ``weights=``, a
        :class:`sthinge.models.CellFM`, or the path of a backbone checkpoint (CellFM ``.ckpt``/``.pt`` or one
        written by sthinge). ``"default"``: sthinge's own offline backbone (:func:`sthinge.tl.default_backbone`,
        pre-trained once on the Her2ST sections of patients other than C and cached; the first call takes 2-3
        minutes on 2 idle CPU cores). A preset without weights is randomly initialised (for tests only; a warning
        says so).
    weights
        Local weights file of the preset.
    config
        Model variant: a dict of :class:`sthinge.models.HingeConfig` fields (e.g. ``{"variant": "scratch"}``,
        ``{"init": "exact-identity"}``, ``{"mask_fill": "zero"}``, ``{"condition": "concat"}``).
    %(embedding_key)s
    %(genes_key)s
    %(layer_lognorm)s
    train_sections
        Sections to train on (default: all); values of ``obs[section_key]``.
    %(section_key)s
    val_fraction
        Fraction of the training spots held out for early stopping.
    max_epochs, batch_size, lr, weight_decay, milestones, gamma, patience, min_epochs, curriculum_epochs
        Training schedule (see above). ``curriculum_epochs=0`` is the NoCurr ablation.
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
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sthinge._vocab import cellfm_gene_ids
    from sthinge.models import Hinge
    from sthinge.tl._data import _embedding, _expression, _panel, _panel_symbols, _section_rows
    from sthinge.tl._model import HingeModel

    # ---- validate everything before any work ----------------------------------------------------------
    table, _ = _resolve_table(data, table_key)
    val_fraction = _check_float("val_fraction", val_fraction, low=0.0, high=0.9)
    max_epochs = _check_int("max_epochs", max_epochs, low=1)
    batch_size = _check_int("batch_size", batch_size, low=1)
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
    _check_choice("precision", precision, _PRECISIONS)
    check_accelerator(accelerator, devices)
    if resume and checkpoint_dir is None:
        raise ValueError("`resume=True` needs `checkpoint_dir` (where the checkpoints of the interrupted fit are).")
    _check_checkpoint_dir(checkpoint_dir, resume=resume, overwrite=overwrite)
    if table.n_obs == 0:
        raise ValueError("`data` has no spots.")
    genes = _panel(table, genes_key)
    symbols = _panel_symbols(table, genes_key, genes)
    rows = _section_rows(table, train_sections, section_key, "train_sections")
    x, layer_used = _expression(table, layer, genes, rows)
    emb = _embedding(table, embedding_key, rows)
    if len(rows) < 2:
        raise ValueError("`train_sections` select fewer than 2 spots; cannot train.")
    with torch.random.fork_rng(devices=[]):  # a randomly initialised preset depends on `seed` only
        torch.manual_seed(seed)
        net, source = _resolve_backbone(backbone, weights)
    try:
        gene_ids = cellfm_gene_ids(symbols, net.config.vocab_size)
    except KeyError as err:
        detail = err.args[0] if err.args else ""
        raise KeyError(
            f"The panel (`genes_key` {genes_key!r}) has genes outside the {net.config.vocab_size}-gene vocabulary of "
            f"the backbone ({detail}); run `pp.select_genes(data, vocab={net.config.vocab_size})`."
        ) from None
    hconfig = _hinge_config(config, len(genes), emb.shape[1])

    # ---- data ---------------------------------------------------------------------------------------------
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    n_val = int(round(val_fraction * len(rows))) if val_fraction > 0 else 0
    n_val = min(n_val, len(rows) - 1)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if standardize_embedding:
        mean = emb[train_idx].mean(0)
        std = emb[train_idx].std(0)
        std = np.where(std > 1e-6, std, 1.0).astype(np.float32)
    else:
        mean, std = np.zeros(emb.shape[1], np.float32), np.ones(emb.shape[1], np.float32)
    cond = ((emb - mean) / std).astype(np.float32)
    xt, ct = torch.from_numpy(x), torch.from_numpy(cond)

    pl.seed_everything(seed, workers=True, verbose=False)
    module = Hinge(net, torch.as_tensor(gene_ids, dtype=torch.long), hconfig)
    lit_cls = _lightning_module_class()
    lit = lit_cls(
        module, lr=lr, weight_decay=weight_decay, milestones=milestones, gamma=gamma,
        curriculum_epochs=curriculum_epochs, val_metric=val_metric, val_steps=val_steps, loss_weight=loss_weight,
    )
    g = torch.Generator().manual_seed(seed)
    train_dl = DataLoader(TensorDataset(xt[train_idx], ct[train_idx]), batch_size=batch_size, shuffle=True,
                          generator=g, drop_last=len(train_idx) > batch_size)
    val_dl = None
    if n_val > 0:
        val_dl = DataLoader(TensorDataset(xt[val_idx], ct[val_idx]), batch_size=max(batch_size * 8, 64))

    from sthinge._settings import settings

    if precision is None:
        precision = "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"
    stopper = _callbacks(patience, min_epochs)
    callbacks = [stopper]
    show = settings.verbosity >= 2
    if show:
        callbacks.append(_Progress.make())
    ckpt_path = None
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        last = checkpoint_dir / "last.ckpt"
        callbacks.append(_last_checkpoint_class()(last))
        if resume and last.is_file():
            _check_resume_checkpoint(last)
            ckpt_path = str(last)
            logg.info(f"resuming from {last}")
        elif resume:
            logg.warning(f"`resume=True` but {last} does not exist: starting from scratch.")
    with quiet_lightning():  # no start-up chatter from Lightning below verbosity 3
        trainer = pl.Trainer(
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            strategy=strategy,
            precision=precision,
            gradient_clip_val=gradient_clip_val,
            callbacks=callbacks,
            enable_progress_bar=show,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=checkpoint_dir is not None,
            deterministic=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if val_dl is not None else 0,
            default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
            plugins=[_checkpoint_io_class()()],
        )
    if trainer.world_size > 1:
        # DDP shuffles with its own DistributedSampler, seeded by `seed_everything`; and a torch.Generator cannot
        # be sent to spawned worker processes
        train_dl = DataLoader(train_dl.dataset, batch_size=batch_size, shuffle=True, drop_last=train_dl.drop_last)
    else:
        lit.loader_generator = g
    result_dir = stopper.result_dir = tempfile.mkdtemp(prefix="sthinge-fit-")  # used by spawned workers only

    # on Ctrl-C Lightning ignores SIGINT from then on and calls sys.exit(1): give the handler back and raise
    # KeyboardInterrupt instead (a notebook kernel stays interruptible)
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    with quiet_lightning():
        try:
            trainer.fit(lit, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path,
                        weights_only=True)
            _collect_worker_results(result_dir, lit, stopper)
        except FloatingPointError as err:
            raise FloatingPointError(f"{err} {_last_good_note(checkpoint_dir, lit.history)}") from None
        except SystemExit:
            if not trainer.interrupted:
                raise
            raise KeyboardInterrupt(
                f"`fit` was interrupted. {_last_good_note(checkpoint_dir, lit.history)}"
            ) from None
        finally:
            shutil.rmtree(result_dir, ignore_errors=True)
            if sigint is not None:
                signal.signal(signal.SIGINT, sigint)
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
    )
    logg.info(f"fit: {len(lit.history)} epochs; best validation {stopper.best:.4g} at epoch {stopper.best_epoch}.")
    return model
