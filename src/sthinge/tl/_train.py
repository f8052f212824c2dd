"""The training core shared by :func:`sthinge.tl.fit` and :func:`sthinge.tl.pretrain_backbone`.

One base :class:`~lightning.pytorch.LightningModule` (per-epoch history, NaN guards, validation averaged over
spots and ranks, random states in checkpoints), the callbacks (early stopping with sthinge's warm-up rule,
``last.ckpt`` after every epoch, atomic checkpoint files, pre-training progress), and :func:`run_trainer`, the
one place where a :class:`~lightning.pytorch.Trainer` is built and run (precision, progress, Ctrl-C, results of
spawned DDP workers). Everything is defined at module level, so that spawn-based DDP pickles it by name.

This module imports Lightning; it is imported only when training starts.
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint, EarlyStopping, TQDMProgressBar
from lightning.pytorch.plugins.io import TorchCheckpointIO

from sthinge._logging import logg, progress, quiet_lightning
from sthinge._settings import TrainerSpec


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------
def resolve_precision(precision: str | None) -> str:
    """``precision=None``: ``"bf16-mixed"`` on a GPU that supports it, else ``"32-true"``."""
    if precision is not None:
        return precision
    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "32-true"


def rng_states(loader_generator: torch.Generator | None = None) -> dict[str, Any]:
    """The states of every generator training draws from: torch (CPU and CUDA), numpy, python, the loader's.

    Plain tensors, ints and tuples, so that a checkpoint holding them loads with ``weights_only=True``."""
    import random

    _, keys, pos, has_gauss, gauss = np.random.get_state()  # noqa: NPY002 - the legacy global generator
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        state["loader"] = loader_generator.get_state()
    return state


def set_rng_states(state: dict[str, Any], loader_generator: torch.Generator | None = None) -> None:
    """Restore what :func:`rng_states` returned."""
    import random

    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    legacy = (
        "MT19937",
        np_state["keys"].numpy().astype(np.uint32),
        np_state["pos"],
        np_state["has_gauss"],
        np_state["gauss"],
    )
    np.random.set_state(legacy)  # noqa: NPY002 - the legacy global generator
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda = list(state["cuda"])
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    if loader_generator is not None and "loader" in state:
        loader_generator.set_state(state["loader"])


def duration(seconds: float) -> str:
    """``"45 s"``, ``"13 min"`` or ``"1.5 h"``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


# ----------------------------------------------------------------------------------------------------------
# the base module
# ----------------------------------------------------------------------------------------------------------
class TrainingModule(pl.LightningModule):
    """What every sthinge training loop shares.

    Subclasses set :attr:`net` (the trained :class:`torch.nn.Module`), :attr:`what` (the name of the loss in
    messages) and :attr:`val_name` (the logged validation metric), call :meth:`train_loss` on each batch's loss
    and :meth:`add_validation` on each validation batch. The base class then guards against NaN losses and
    weights, averages validation over spots (and DDP ranks), keeps ``history`` (one dict per epoch: ``epoch``,
    ``lr``, ``train_loss`` and the validation metric), and puts the history and the states of all random
    generators into checkpoints, so that a resumed run continues exactly.
    """

    what = "training"
    val_name = "val"

    def __init__(self) -> None:
        super().__init__()
        self.history: list[dict[str, float]] = []
        self.loader_generator: torch.Generator | None = None  # the training loader's (its state is checkpointed)
        self._epoch_losses: list[float] = []
        self._val: list[tuple[float, int]] = []

    @property
    def net(self) -> torch.nn.Module:  # pragma: no cover - every subclass overrides it
        raise NotImplementedError

    def train_loss(self, loss: torch.Tensor, batch_idx: int, batch_size: int) -> torch.Tensor:
        """Stop on a non-finite loss; record and log a finite one."""
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"The {self.what} loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx}; "
                "training stopped. Lower `lr`, check the inputs for extreme values, or use precision='32-true'."
            )
        self._epoch_losses.append(float(loss.detach()))
        self.log("train_loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=batch_size)
        return loss

    def add_validation(self, value: float, n: int) -> None:
        self._val.append((float(value), int(n)))

    def on_validation_epoch_end(self) -> None:
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
        self.log(self.val_name, value, prog_bar=True, sync_dist=distributed)

    def on_train_epoch_end(self) -> None:
        bad = [n for n, p in self.net.named_parameters() if p.requires_grad and not bool(torch.isfinite(p).all())]
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
        val = self.trainer.callback_metrics.get(self.val_name)
        if val is not None:
            entry[self.val_name] = float(val)
        self._epoch_losses.clear()
        self.history.append(entry)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["sthinge_history"] = list(self.history)
        checkpoint["sthinge_rng"] = rng_states(self.loader_generator)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("sthinge_history", []))
        # the generators continue exactly where the interrupted run left them. Restored here, before Lightning
        # creates the first data iterator (which already draws from the loader's generator); nothing between
        # this hook and the first training batch draws random numbers
        if "sthinge_rng" in checkpoint:
            set_rng_states(checkpoint["sthinge_rng"], self.loader_generator)


class HingeLightning(TrainingModule):
    """HINGE's training loop: masked-diffusion loss with the warm-start curriculum, AdamW, MultiStepLR."""

    def __init__(
        self,
        module: torch.nn.Module,
        *,
        lr: float,
        weight_decay: float,
        milestones: Sequence[int],
        gamma: float,
        curriculum_epochs: int,
        val_metric: str,
        val_steps: int,
        loss_weight: str,
    ) -> None:
        from sthinge.models import MaskSchedule

        super().__init__()
        self.module = module
        self.schedule = MaskSchedule.from_config(module.config)
        self.lr, self.weight_decay = lr, weight_decay
        self.milestones, self.gamma = list(milestones), gamma
        self.curriculum_epochs = curriculum_epochs
        self.val_metric, self.val_steps, self.loss_weight = val_metric, val_steps, loss_weight
        self.strict_loading = False  # checkpoints hold only the trainable weights

    @property
    def net(self) -> torch.nn.Module:
        return self.module

    def training_step(self, batch, batch_idx):
        from sthinge.models import training_loss

        x0, cond = batch
        t_max = self.schedule.t_cap() if self.current_epoch < self.curriculum_epochs else None
        loss = training_loss(self.module, x0, cond, self.schedule, t_max=t_max, loss_weight=self.loss_weight)
        return self.train_loss(loss, batch_idx, x0.shape[0])

    def validation_step(self, batch, batch_idx):
        from sthinge.models import sample, training_loss

        x0, cond = batch
        g = torch.Generator(device="cpu").manual_seed(1234 + batch_idx)
        if self.val_metric == "loss":
            value = training_loss(self.module, x0, cond, self.schedule, generator=g, loss_weight=self.loss_weight)
        else:
            mean, _ = sample(
                self.module,
                cond,
                schedule=self.schedule,
                n_steps=min(self.val_steps, self.schedule.n_steps),
                n_samples=1,
                batch_size=max(64, x0.shape[0]),
                generator=g,
                draw=False,
            )  # the decoder's mean, not a draw from a Gaussian decoder
            value = ((mean.float() - x0.float()) ** 2).mean()
        self.add_validation(float(value), x0.shape[0])

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


class PretrainLightning(TrainingModule):
    """A backbone's masked value modelling (its ``pretraining_loss``): AdamW (β = 0.9, 0.95, as CellFM), linear
    warm-up then cosine decay per step. Token tables, CLS and mask tokens, biases and norms are not decayed."""

    what = "pre-training"
    val_name = "val_loss"
    NO_DECAY = ("gene_emb", "cls_token", "zero_emb", "value_enc.mask_emb", "ST_emb", "encoder.embedding.weight")

    def __init__(
        self,
        model: torch.nn.Module,
        gene_ids,
        *,
        lr: float,
        weight_decay: float,
        mask_ratio: float,
        n_tokens: int | None,
        seed: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("gene_ids", torch.as_tensor(gene_ids, dtype=torch.long), persistent=False)
        self.lr, self.weight_decay = lr, weight_decay
        self.mask_ratio, self.n_tokens, self.seed = mask_ratio, n_tokens, seed
        self.generator = torch.Generator().manual_seed(seed + 1)

    @property
    def net(self) -> torch.nn.Module:
        return self.model

    def training_step(self, batch, batch_idx):
        from sthinge.tl._corpus import masked_loss

        values, missing = batch
        loss = masked_loss(
            self.model,
            self.gene_ids,
            values,
            missing,
            n_tokens=self.n_tokens,
            mask_ratio=self.mask_ratio,
            generator=self.generator,
        )
        return self.train_loss(loss, batch_idx, values.shape[0])

    def validation_step(self, batch, batch_idx):
        from sthinge.tl._corpus import VAL_SEED_OFFSET, masked_loss

        values, missing = batch
        g = torch.Generator().manual_seed(self.seed + VAL_SEED_OFFSET + batch_idx)
        loss = masked_loss(
            self.model, self.gene_ids, values, missing, n_tokens=self.n_tokens, mask_ratio=self.mask_ratio, generator=g
        )
        self.add_validation(float(loss), values.shape[0])

    def configure_optimizers(self):
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            (no_decay if name in self.NO_DECAY or p.ndim < 2 else decay).append(p)
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


# ----------------------------------------------------------------------------------------------------------
# callbacks
# ----------------------------------------------------------------------------------------------------------
class BestAndEarlyStop(EarlyStopping):
    """Lightning's early stopping on the validation metric, with sthinge's warm-up rule and best weights.

    Epochs without improvement are counted only from ``min_epochs`` on (the paper's warm-up), the trainable
    weights of the best epoch are kept in memory and restored at the end, and the state (best value, epoch
    and weights, patience counter) goes into checkpoints under ``"BestAndEarlyStop"``, so that a resumed fit
    stops and restores exactly as an uninterrupted one would.

    With a spawn-based strategy (``ddp_spawn``, ``ddp_fork``) training runs in worker processes: each rank then
    writes its history and best epoch to ``result_dir/rank{r}.pt`` for the main process (Lightning itself sends
    rank 0's trainable weights back, after the best ones were restored here).
    """

    def __init__(self, patience: int, min_epochs: int, monitor: str = "val", result_dir: str | None = None) -> None:
        super().__init__(
            monitor=monitor,
            patience=patience,
            mode="min",
            strict=False,
            check_finite=False,
            check_on_train_epoch_end=False,
        )
        self.min_epochs, self.result_dir = min_epochs, result_dir
        self.main_pid = os.getpid()
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = -1
        self._trainer: pl.Trainer | None = None  # set during a check (Lightning passes only the value on)
        self._module: TrainingModule | None = None

    @property
    def state_key(self) -> str:
        return "BestAndEarlyStop"

    @property
    def best(self) -> float:
        return float(self.best_score)

    def on_validation_end(self, trainer, pl_module):
        self._trainer, self._module = trainer, pl_module
        try:
            super().on_validation_end(trainer, pl_module)
        finally:
            self._trainer = self._module = None

    def _evaluate_stopping_criteria(self, current):
        epoch = self._trainer.current_epoch
        if float(current) < self.best:
            self.best_score, self.best_epoch, self.wait_count = current.detach().cpu().double(), epoch, 0
            self.best_state = {
                n: p.detach().cpu().clone() for n, p in self._module.net.named_parameters() if p.requires_grad
            }
        elif epoch >= self.min_epochs:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                logg.info(f"early stopping at epoch {epoch}: no improvement for {self.patience} epochs")
                return True, None
        return False, None

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_epoch": int(self.best_epoch),
            "bad": int(self.wait_count),
            "best_state": self.best_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score = torch.tensor(float(state["best"]), dtype=torch.float64)
        self.best_epoch, self.wait_count = int(state["best_epoch"]), int(state["bad"])
        self.best_state = state["best_state"]

    def on_train_start(self, trainer, pl_module):
        if self.wait_count >= self.patience:  # resumed from the checkpoint of a fit that had stopped early
            logg.info("the checkpoint is from a fit that had already stopped early: no further epochs")
            trainer.should_stop = True

    def on_fit_end(self, trainer, pl_module):
        self.restore(pl_module.net)
        if os.getpid() != self.main_pid and self.result_dir is not None:  # a worker process of ddp_spawn & co.
            from sthinge.io import atomic_save

            result = {"history": list(pl_module.history), "best": self.best, "best_epoch": self.best_epoch}
            atomic_save(result, Path(self.result_dir) / f"rank{trainer.global_rank}.pt")

    def restore(self, module: torch.nn.Module) -> None:
        """Copy the best epoch's trainable weights into ``module`` (nothing if no epoch was validated)."""
        if self.best_state is None:
            return
        with torch.no_grad():
            params = dict(module.named_parameters())
            for n, v in self.best_state.items():
                params[n].copy_(v.to(params[n].device))


class LastCheckpoint(Checkpoint):
    """Write ``last.ckpt`` at the very end of every training epoch: after validation, early stopping and the
    history entry, and after the weights were checked to be finite (Lightning calls :class:`Checkpoint`
    callbacks after the module's own ``on_train_epoch_end``).

    Not a :class:`~lightning.pytorch.callbacks.ModelCheckpoint`: its ``save_last`` writes only after a top-k
    save, and its state names its folder, so a run could not be resumed from a copied folder. This callback
    has no state of its own; the file holds everything a resumed fit needs (see :func:`sthinge.tl.fit`) and is
    written by :class:`SafeCheckpointIO`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = str(path)

    def on_train_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            trainer.save_checkpoint(self.path)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written atomically (:func:`sthinge.io.atomic_save`) and read with
    ``weights_only=True`` (:func:`sthinge.io.safe_torch_load`)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        from sthinge.io import atomic_save

        if storage_options is not None:
            raise TypeError("`storage_options` is not supported by sthinge's checkpoints.")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        from sthinge.io import safe_torch_load

        return safe_torch_load(path)  # always weights_only=True, on the CPU (Lightning moves states later)


class StepProgress(pl.Callback):
    """One bar over all ``total_steps`` training steps with the time left (hidden below verbosity 2), and after
    the first epoch an INFO line with the estimate, which also reaches a log file where a bar does not."""

    def __init__(self, total_steps: int, max_epochs: int, desc: str, name: str) -> None:
        self.total_steps, self.max_epochs, self.desc, self.name = total_steps, max_epochs, desc, name

    def on_train_start(self, trainer, pl_module):
        self.start = time.perf_counter()
        self.bar = progress(None, total=self.total_steps, desc=self.desc, unit="step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.bar.update(1)

    def on_train_epoch_end(self, trainer, pl_module):
        epoch = trainer.current_epoch + 1
        self.bar.set_postfix_str(f"epoch {epoch}/{self.max_epochs}")
        done = trainer.global_step
        if epoch == 1 and 0 < done < self.total_steps:
            took = time.perf_counter() - self.start
            self.bar.clear()  # the log line on a line of its own, the bar below it
            logg.info(
                f"{self.name}: epoch 1 of {self.max_epochs} took {duration(took)}; about "
                f"{duration(took / done * (self.total_steps - done))} left."
            )
            self.bar.refresh()

    def on_train_end(self, trainer, pl_module):
        self.bar.close()


# ----------------------------------------------------------------------------------------------------------
# running a Trainer
# ----------------------------------------------------------------------------------------------------------
def last_good_note(checkpoint_dir: str | os.PathLike | None, history: list[dict[str, float]]) -> str:
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


def _collect_worker_results(result_dir: str, lit: TrainingModule, stopper: BestAndEarlyStop | None) -> None:
    """After a spawn-based DDP run: take rank 0's history and best epoch; the ranks must agree on them."""
    paths = sorted(Path(result_dir).glob("rank*.pt"), key=lambda p: int(p.stem[4:]))
    if not paths:  # trained in this process
        return
    results = [torch.load(p, weights_only=True) for p in paths]
    ranks = [int(p.stem[4:]) for p in paths]
    if ranks[0] != 0:
        raise RuntimeError("DDP training finished without results from rank 0.")
    for rank, res in zip(ranks[1:], results[1:], strict=True):
        if res["history"] != results[0]["history"] or res["best_epoch"] != results[0]["best_epoch"]:
            raise RuntimeError(f"DDP ranks 0 and {rank} disagree on the validation history / best epoch.")
    lit.history = list(results[0]["history"])
    if stopper is not None:
        stopper.best_score = torch.tensor(float(results[0]["best"]), dtype=torch.float64)
        stopper.best_epoch = int(results[0]["best_epoch"])


def run_trainer(
    lit: TrainingModule,
    train_dl,
    val_dl,
    spec: TrainerSpec,
    *,
    callbacks: Sequence[pl.Callback] = (),
    progress_bar: bool = False,
    checkpoint_dir: str | os.PathLike | None = None,
    ckpt_path: str | None = None,
    loader_generator: torch.Generator | None = None,
    resumable: bool = True,
) -> pl.Trainer:
    """Build a Trainer from ``spec`` and fit ``lit``: the one place where sthinge runs Lightning.

    ``spec.precision=None`` is resolved by :func:`resolve_precision`; ``progress_bar`` shows Lightning's batch bar;
    with ``checkpoint_dir``, ``last.ckpt`` is written there after every epoch (:class:`LastCheckpoint`) and
    ``ckpt_path`` is resumed from. With several devices the training loader is rebuilt without its generator
    (DDP shuffles with its own sampler, and a generator cannot be sent to spawned workers); otherwise the
    loader's generator is checkpointed with the module. Ctrl-C raises :class:`KeyboardInterrupt` (Lightning
    would exit the process) and leaves the SIGINT handler as it was; a non-finite loss or weight raises
    :class:`FloatingPointError`; with ``resumable``, both messages name the last good checkpoint. After a
    spawn-based DDP run the history and best epoch of rank 0 are collected into ``lit`` and the
    :class:`BestAndEarlyStop` callback.
    """
    from torch.utils.data import DataLoader

    def note() -> str:
        return f" {last_good_note(checkpoint_dir, lit.history)}" if resumable else ""

    callbacks = list(callbacks)
    stopper = next((c for c in callbacks if isinstance(c, BestAndEarlyStop)), None)
    if progress_bar:
        callbacks.append(TQDMProgressBar(leave=False))
    if checkpoint_dir is not None:
        callbacks.append(LastCheckpoint(Path(checkpoint_dir) / "last.ckpt"))
    with quiet_lightning():  # no start-up chatter from Lightning below verbosity 3
        trainer = pl.Trainer(
            max_epochs=spec.max_epochs,
            max_steps=-1 if spec.max_steps is None else spec.max_steps,
            accelerator=spec.accelerator,
            devices=spec.devices,
            strategy=spec.strategy,
            precision=resolve_precision(spec.precision),
            gradient_clip_val=spec.gradient_clip_val,
            callbacks=callbacks,
            enable_progress_bar=progress_bar,
            enable_model_summary=False,
            logger=False,
            enable_checkpointing=checkpoint_dir is not None,
            deterministic=False,
            num_sanity_val_steps=0,
            limit_val_batches=1.0 if val_dl is not None else 0,
            default_root_dir=str(checkpoint_dir) if checkpoint_dir is not None else None,
            plugins=[SafeCheckpointIO()],
        )
    if trainer.world_size > 1:
        train_dl = DataLoader(
            train_dl.dataset,
            batch_size=train_dl.batch_size,
            shuffle=True,
            drop_last=train_dl.drop_last,
            collate_fn=train_dl.collate_fn,
        )
    else:
        lit.loader_generator = loader_generator
    result_dir = tempfile.mkdtemp(prefix="sthinge-train-")  # used by spawned workers only
    if stopper is not None:
        stopper.result_dir = result_dir

    # on Ctrl-C Lightning ignores SIGINT from then on and calls sys.exit(1): give the handler back and raise
    # KeyboardInterrupt instead (a notebook kernel stays interruptible)
    main_thread = threading.current_thread() is threading.main_thread()
    sigint = signal.getsignal(signal.SIGINT) if main_thread else None
    with quiet_lightning():
        try:
            trainer.fit(lit, train_dataloaders=train_dl, val_dataloaders=val_dl, ckpt_path=ckpt_path, weights_only=True)
            _collect_worker_results(result_dir, lit, stopper)
        except FloatingPointError as err:
            raise FloatingPointError(f"{err}{note()}") from None
        except SystemExit:
            if not trainer.interrupted:
                raise
            raise KeyboardInterrupt(f"`{spec.name}` was interrupted.{note()}") from None
        finally:
            shutil.rmtree(result_dir, ignore_errors=True)
            if sigint is not None:
                signal.signal(signal.SIGINT, sigint)
    return trainer
