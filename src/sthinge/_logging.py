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
