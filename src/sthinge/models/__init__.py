"""Pure-torch models of sthinge: CellFM, HINGE (SoftAdaLN), the masked-diffusion schedule and the sampler.

Nothing here imports AnnData, scanpy or the rest of sthinge, except :func:`load_cellfm`, which lives in
:mod:`sthinge.io` and is imported lazily on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sthinge.models.cellfm import (
    NUMERICS,
    PRESETS,
    VOCAB_SIZE_80M,
    VOCAB_SIZE_800M,
    CellFM,
    CellFMConfig,
    masked_value_loss,
    pretraining_masks,
)
from sthinge.models.diffusion import MaskSchedule, calibrate, fill_values, training_loss
from sthinge.models.hinge import Hinge, HingeConfig, load_official_hinge
from sthinge.models.likelihood import beta_nll, censored_gaussian_moments, gaussian_crps
from sthinge.models.sampler import auto_batch_size, sample, sample_reference
from sthinge.models.softadaln import ConcatCondition, SoftAdaLN, SoftNorm, SumCondition, timestep_embedding

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.io import load_cellfm

__all__ = [
    "NUMERICS",
    "PRESETS",
    "VOCAB_SIZE_80M",
    "VOCAB_SIZE_800M",
    "CellFM",
    "CellFMConfig",
    "ConcatCondition",
    "Hinge",
    "HingeConfig",
    "MaskSchedule",
    "SoftAdaLN",
    "SoftNorm",
    "SumCondition",
    "auto_batch_size",
    "beta_nll",
    "calibrate",
    "censored_gaussian_moments",
    "fill_values",
    "gaussian_crps",
    "load_cellfm",
    "load_official_hinge",
    "masked_value_loss",
    "pretraining_masks",
    "sample",
    "sample_reference",
    "timestep_embedding",
    "training_loss",
]


def __getattr__(name: str) -> Any:
    # load_cellfm is written in sthinge.io (which imports this package): resolve it on first use, no cycle
    if name == "load_cellfm":
        try:
            module = importlib.import_module("sthinge.io._cellfm")
        except ModuleNotFoundError as err:  # pragma: no cover - depends on the io package
            if err.name not in ("sthinge.io", "sthinge.io._cellfm"):
                raise
            raise AttributeError("load_cellfm is not available: sthinge.io._cellfm is missing") from err
        return module.load_cellfm
    raise AttributeError(f"module 'sthinge.models' has no attribute {name!r}")
