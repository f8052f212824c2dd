"""Logging and progress bars that honour ``settings.verbosity``."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TypeVar

logg = logging.getLogger("sthinge")
if not logg.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(levelname)s (sthinge): %(message)s"))
    logg.addHandler(_handler)
    logg.propagate = False


def _apply_verbosity() -> None:
    from sthinge._settings import _VERBOSITY_LEVELS, settings

    logg.setLevel(_VERBOSITY_LEVELS[settings.verbosity])


_apply_verbosity()

T = TypeVar("T")


def progress(iterable: Iterable[T], *, desc: str | None = None, total: int | None = None, **kwargs) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar unless ``settings.verbosity < 2``."""
    from tqdm.auto import tqdm

    from sthinge._settings import settings

    return tqdm(iterable, desc=desc, total=total, disable=settings.verbosity < 2, leave=False, **kwargs)


class quiet_lightning:
    """Context manager: Lightning's start-up chatter and known harmless warnings only at ``verbosity >= 3``."""

    _LOGGERS = ("lightning.pytorch", "lightning.fabric", "lightning", "pytorch_lightning")
    _WARNINGS = (
        ".*does not have many workers.*",
        ".*number of training batches.*",
        ".*GPU available but not used.*",
        ".*no `val_dataloader`.*",
        ".*treespec.*LeafSpec.*",
        ".*limit_val_batches.*",
        # HINGE's frozen backbone modules stay in eval mode on purpose; none of them (Linear, LayerNorm, retention,
        # soft binning) behaves differently in training mode
        r".*module\(s\) in eval mode at the start of training.*",
    )

    def __enter__(self):
        import warnings

        from sthinge._settings import settings

        self._levels = {}
        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        for pattern in self._WARNINGS:
            warnings.filterwarnings("ignore", pattern)
        if settings.verbosity < 3:
            for name in self._LOGGERS:
                lg = logging.getLogger(name)
                self._levels[name] = lg.level
                lg.setLevel(logging.WARNING)
        return self

    def __exit__(self, *exc):
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
        self._catch.__exit__(*exc)
        return False
