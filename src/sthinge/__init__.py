"""sthinge: spatial gene expression from H&E with a frozen foundation model, SoftAdaLN and masked diffusion."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from sthinge._settings import settings
from sthinge._version import __version__

_SUBMODULES = ("datasets", "io", "models", "pl", "pp", "tl")

__all__ = ["settings", "__version__", *_SUBMODULES]

if TYPE_CHECKING:  # pragma: no cover
    from sthinge import datasets, io, models, pl, pp, tl  # noqa: F401


def __getattr__(name: str):
    # submodules are imported on first access so that `import sthinge` stays light (no torch / spatialdata)
    if name in _SUBMODULES:
        module = importlib.import_module(f"sthinge.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'sthinge' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
