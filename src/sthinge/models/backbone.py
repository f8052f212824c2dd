"""The backbone contract: what HINGE needs from an expression foundation model, and the backbones that meet it.

HINGE keeps a pre-trained expression model frozen and wraps each of its blocks with SoftAdaLN. It needs four things
from that model, and :class:`ExpressionBackbone` names them:

- a **token embedding** of gene ids and expression values (``embed_genes``, ``encode_values``);
- the **stack of blocks** that SoftAdaLN wraps (``blocks``);
- the **expression decoder** that reads one value per gene token (``decode``);
- the **vocabulary**: gene symbols to ids (``vocabulary``, ``gene_ids``).

Beyond those, a backbone can pre-train itself (``pretraining_loss``, its own objective, used by
:func:`sthinge.tl.pretrain_backbone`). :class:`~sthinge.models.cellfm.CellFM` and
:class:`~sthinge.models.scgpt.ScGPT` meet the contract; :data:`BACKBONES` lists each with its configuration class,
its presets and its HINGE retrofit (:class:`~sthinge.models.hinge.Hinge`,
:class:`~sthinge.models.hinge_scgpt.HingeScGPT`). Code outside this module and the backbones' own modules asks
:func:`backbone_kind` and :func:`retrofit` instead of testing which backbone it holds.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from sthinge.models.cellfm import PRESETS, CellFM, CellFMConfig
from sthinge.models.hinge import Hinge, HingeConfig
from sthinge.models.hinge_scgpt import HingeScGPT
from sthinge.models.scgpt import SCGPT_PRESETS, ScGPT, ScGPTConfig

__all__ = ["BACKBONES", "BackboneKind", "ExpressionBackbone", "backbone_kind", "retrofit"]


@runtime_checkable
class ExpressionBackbone(Protocol):
    """The contract of a backbone HINGE can retrofit (see the module docstring)."""

    kind: str
    first_gene_id: int
    config: Any

    @property
    def blocks(self) -> nn.ModuleList:
        """The blocks SoftAdaLN wraps, in order."""

    def embed_genes(self, gene_ids: Tensor) -> Tensor:
        """Gene-token embedding: ids (...) -> (..., D)."""

    def encode_values(self, values: Tensor) -> Tensor:
        """Expression value embedding: (...) -> (..., D)."""

    def decode(self, h: Tensor) -> Tensor:
        """Expression decoder: hidden gene tokens (B, L, D) -> (B, L)."""

    def vocabulary(self) -> Sequence[str]:
        """Tokens in id order, from id ``first_gene_id``."""

    def gene_ids(self, symbols: Sequence[str]) -> list[int]:
        """Ids of gene symbols; a ``KeyError`` names the ones outside the vocabulary."""

    def pretraining_loss(
        self, gene_ids: Tensor, values: Tensor, pad: Tensor, *, mask_ratio: float, generator: torch.Generator | None
    ) -> Tensor:
        """The backbone's own pre-training objective on (B, L) ids, values and pad flags."""


@dataclass(frozen=True)
class BackboneKind:
    """One family of backbones: its module and configuration classes, its presets and its HINGE retrofit.

    Parameters
    ----------
    name
        ``"cellfm"`` or ``"scgpt"``; recorded in model files.
    module
        The backbone class.
    config
        Its configuration dataclass.
    hinge
        The HINGE class that retrofits it (constructor ``(backbone, gene_ids, config)``, classmethod
        ``from_state(backbone, state_dict, config)``).
    presets
        Named configurations, by the name :func:`sthinge.tl.fit` accepts (``"tiny"``, ``"scgpt-whole-human"``, ...).
    """

    name: str
    module: type[nn.Module]
    config: type
    hinge: type[nn.Module]
    presets: Mapping[str, Any]

    @property
    def first_gene_id(self) -> int:
        """Smallest id a gene can have (CellFM: 1, as 0 is padding; scGPT: 0)."""
        return int(self.module.first_gene_id)

    def make_config(self, fields: Mapping[str, Any]):
        """The configuration from a dict of its fields (a model file's ``backbone_config``)."""
        return self.config(**fields)

    def empty(self, config) -> nn.Module:
        """An uninitialised backbone of ``config`` on the CPU, for weights that are loaded next."""
        with torch.device("meta"):
            net = self.module(config)
        return net.to_empty(device="cpu")

    def preset(self, name: str):
        """The configuration of preset ``name``."""
        return self.presets[name]


BACKBONES: dict[str, BackboneKind] = {
    "cellfm": BackboneKind("cellfm", CellFM, CellFMConfig, Hinge, PRESETS),
    "scgpt": BackboneKind("scgpt", ScGPT, ScGPTConfig, HingeScGPT, {f"scgpt-{k}": v for k, v in SCGPT_PRESETS.items()}),
}
"""The backbones HINGE can retrofit, by name."""


def backbone_kind(obj: Any) -> BackboneKind:
    """The :class:`BackboneKind` of a backbone module, of its configuration, of a HINGE module, or of a name.

    Parameters
    ----------
    obj
        A :class:`~sthinge.models.cellfm.CellFM` or :class:`~sthinge.models.scgpt.ScGPT` (or their configuration),
        a HINGE module built on one, or a kind name (``"cellfm"``, ``"scgpt"``).

    Returns
    -------
    The entry of :data:`BACKBONES`.

    Raises
    ------
    TypeError
        If ``obj`` is none of these.
    ValueError
        If ``obj`` is an unknown kind name.
    """
    if isinstance(obj, str):
        if obj not in BACKBONES:
            raise ValueError(f"unknown backbone kind {obj!r}; expected one of {sorted(BACKBONES)}")
        return BACKBONES[obj]
    for kind in BACKBONES.values():
        if isinstance(obj, kind.module | kind.config | kind.hinge):
            return kind
    if isinstance(obj, nn.Module) and hasattr(obj, "backbone_config"):
        return backbone_kind(obj.backbone_config)
    raise TypeError(f"not a backbone, backbone configuration or HINGE module: {type(obj).__name__}")


def retrofit(backbone: nn.Module, gene_ids: Tensor | Sequence[int], config: HingeConfig) -> nn.Module:
    """HINGE on ``backbone``: the backbone's modules frozen (or not, by ``config.variant``) and wrapped with SoftAdaLN.

    Parameters
    ----------
    backbone
        A :class:`~sthinge.models.cellfm.CellFM` or :class:`~sthinge.models.scgpt.ScGPT`; its modules are reused.
    gene_ids
        (G,) ids of the panel in the backbone's vocabulary (:meth:`ExpressionBackbone.gene_ids`).
    config
        The HINGE configuration.

    Returns
    -------
    :class:`~sthinge.models.hinge.Hinge` or :class:`~sthinge.models.hinge_scgpt.HingeScGPT`.
    """
    kind = backbone_kind(backbone)
    return kind.hinge(backbone, torch.as_tensor(gene_ids, dtype=torch.long), config)


def config_fields(config: Any) -> dict[str, Any]:
    """A backbone configuration as a dict of its fields (what a model file stores)."""
    return dataclasses.asdict(config)
