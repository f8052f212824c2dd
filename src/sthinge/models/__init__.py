"""Pure-torch models of sthinge: CellFM, scGPT, the backbone contract, HINGE (SoftAdaLN), the masked-diffusion
schedule, the Gauss-Diff ablation and the sampler.

Nothing here imports AnnData, scanpy or the rest of sthinge, except :func:`load_cellfm` and :func:`load_scgpt`,
which live in :mod:`sthinge.io` and are imported lazily on first access, and the CellFM vocabularies shipped as
package data (read by :meth:`CellFM.vocabulary`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sthinge.models.backbone import BACKBONES, BackboneKind, ExpressionBackbone, backbone_kind, retrofit
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
from sthinge.models.gaussian_diffusion import (
    GaussianSchedule,
    gaussian_reverse_step,
    gaussian_training_loss,
)
from sthinge.models.hinge import Hinge, HingeConfig, load_official_hinge
from sthinge.models.hinge_scgpt import HingeScGPT
from sthinge.models.likelihood import beta_nll, censored_gaussian_moments, gaussian_crps
from sthinge.models.sampler import auto_batch_size, sample, sample_reference
from sthinge.models.scgpt import SCGPT_PRESETS, WHOLE_HUMAN_VOCAB_SIZE, ScGPT, ScGPTConfig
from sthinge.models.softadaln import (
    ConcatCondition,
    HiddenModulation,
    SoftAdaLN,
    SoftNorm,
    SumCondition,
    timestep_embedding,
)

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.io import load_cellfm, load_scgpt

__all__ = [
    "BACKBONES",
    "NUMERICS",
    "PRESETS",
    "SCGPT_PRESETS",
    "VOCAB_SIZE_800M",
    "VOCAB_SIZE_80M",
    "WHOLE_HUMAN_VOCAB_SIZE",
    "BackboneKind",
    "CellFM",
    "CellFMConfig",
    "ConcatCondition",
    "ExpressionBackbone",
    "GaussianSchedule",
    "Hinge",
    "HingeConfig",
    "HingeScGPT",
    "MaskSchedule",
    "ScGPT",
    "ScGPTConfig",
    "SoftAdaLN",
    "HiddenModulation",
    "SoftNorm",
    "SumCondition",
    "auto_batch_size",
    "backbone_kind",
    "beta_nll",
    "calibrate",
    "censored_gaussian_moments",
    "fill_values",
    "gaussian_crps",
    "gaussian_reverse_step",
    "gaussian_training_loss",
    "load_cellfm",
    "load_official_hinge",
    "load_scgpt",
    "masked_value_loss",
    "pretraining_masks",
    "retrofit",
    "sample",
    "sample_reference",
    "timestep_embedding",
    "training_loss",
]


_LAZY = {"load_cellfm": "sthinge.io._cellfm", "load_scgpt": "sthinge.io._scgpt"}


def __getattr__(name: str) -> Any:
    # the loaders are written in sthinge.io (which imports this package): resolve them on first use, no cycle
    if name in _LAZY:
        try:
            module = importlib.import_module(_LAZY[name])
        except ModuleNotFoundError as err:  # pragma: no cover - depends on the io package
            if err.name not in ("sthinge.io", _LAZY[name]):
                raise
            raise AttributeError(f"{name} is not available: {_LAZY[name]} is missing") from err
        return getattr(module, name)
    raise AttributeError(f"module 'sthinge.models' has no attribute {name!r}")
