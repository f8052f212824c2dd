"""Backbones: what ``tl.fit(backbone=...)`` accepts, the CPU-sized presets, and sthinge's default backbone.

The real CellFM weights are a gated download. The offline default (:func:`default_backbone`) is a backbone of
CellFM's architecture and checkpoint format pre-trained by sthinge (:func:`sthinge.tl.pretrain_backbone`) on the
Her2ST sections of every patient but C, once, and cached.
"""

from __future__ import annotations

import copy as _copy
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sthinge import _constants as K
from sthinge._logging import logg

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.models.cellfm import CellFM, CellFMConfig

__all__ = [
    "CPU_PRESETS",
    "HER2ST_RECIPE",
    "default_backbone",
    "default_backbone_path",
    "her2st_pretraining_sections",
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


# ----------------------------------------------------------------------------------------------------------
# resolution
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


def _without_read_depth_tokens(net):
    """HINGE reads only CLS and the gene tokens: a backbone with CellFM-80M's two read-depth tokens (``ST_emb``,
    ``ST_enc``) is rebuilt without them, as the official HINGE code ignores them when loading the 80M weights."""
    if not net.config.st_tokens:
        return net
    from sthinge.tl._model import _rebuild

    logg.info(
        "backbone: the read-depth tokens of the CellFM-80M weights (`ST_emb`, `ST_enc`) are not used by HINGE "
        "(as in the official code); the backbone runs with its CLS and gene tokens only."
    )
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
    from sthinge.tl._pretrain import _check_save_target, pretrain_backbone

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
    genes = list(panel.uns[K.GENES_KEY]["params"]["symbols"])
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
    from sthinge.tl._pretrain import _check_save_target

    _check_save_target(None if default else path, name="path")
    logg.info(
        f"default_backbone: pre-training the default backbone on Her2ST (patients other than C) into {path}; "
        "this runs once (2-3 min on 2 idle CPU cores) and is cached for later runs."
    )
    pretrain_her2st(save=path, overwrite=True)  # absent, or `rebuild=True` asked for a new one
    return path
