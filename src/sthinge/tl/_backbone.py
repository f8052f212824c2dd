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
    from sthinge.models.scgpt import ScGPT, ScGPTConfig

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
    "cpu-medium": {"n_layers": 8, "d_model": 256, "n_heads": 8, "vocab_size": 27855, "name": "cpu-medium"},
    "cpu-large": {"n_layers": 12, "d_model": 384, "n_heads": 12, "vocab_size": 27855, "name": "cpu-large"},
}
"""Backbone sizes for pre-training on a CPU, used when the name is not in :data:`sthinge.models.PRESETS`.

All have CellFM's 256 value bins and numerics and the 27,855-gene vocabulary; half of the layers use CellFM's
masked keys. ``"cpu-small"`` (the default backbone's): 4 layers, width 128, 8 heads of 16 (4.2 M parameters, 3.6 M
of them the gene table). ``"cpu-medium"``: 8 layers, width 256, 8 heads of 32 (11.6 M, 7.1 M the gene table).
``"cpu-large"``: 12 layers, width 384, 12 heads of 32 (25.3 M, 10.7 M the gene table). The larger two are the
size study of ``docs/benchmarks.md`` (the oracle diagnostic).
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


SCGPT_CPU_PRESETS: dict[str, dict[str, Any]] = {
    "scgpt-cpu-small": {"n_layers": 4, "d_model": 128, "n_heads": 8, "d_hid": 128, "name": "scgpt-cpu-small"},
}
"""scGPT-shaped backbone sizes for pre-training on a CPU (:func:`sthinge.tl.pretrain_backbone`).

``"scgpt-cpu-small"``: 4 post-norm layers of width 128 (8 heads of 16, feed-forward 128, scGPT's ``d_hid =
embsize``), scGPT's value encoder and decoder, a vocabulary of the 27,855 CellFM-80M gene symbols plus ``<pad>``,
``<cls>``, ``<eoc>``; the same size as ``"cpu-small"``, so the two backbones compare at equal width and depth.
"""

SCGPT_PREFIX = "scgpt-"


# ----------------------------------------------------------------------------------------------------------
# the backbone families: presets, vocabulary, files
# ----------------------------------------------------------------------------------------------------------
def _standin_vocab(symbols) -> dict[str, int]:
    """An scGPT vocabulary over ``symbols`` (ids 0..V-1 in order) with scGPT's special tokens appended."""
    from sthinge.models.scgpt import SPECIAL_TOKENS

    vocab = {g: i for i, g in enumerate(symbols)}
    for token in SPECIAL_TOKENS:
        vocab[token] = len(vocab)
    return vocab


def _new_cellfm(config, symbols):
    from sthinge.models.cellfm import CellFM

    return CellFM(config)  # the vocabulary is the shipped one of config.vocab_size


def _new_scgpt(config, symbols):
    from sthinge.models.scgpt import SPECIAL_TOKENS, ScGPT

    # the vocabulary is the stand-in one over `symbols`: the configuration's token count follows it
    n = len(symbols)
    net = ScGPT(dataclasses.replace(config, vocab_size=n + len(SPECIAL_TOKENS), pad_token_id=n))
    net.vocab = _standin_vocab(symbols)
    return net


def _load_cellfm(path: Path, preset: str | None = None, **kw):
    from sthinge.io._cellfm import load_cellfm

    return _without_read_depth_tokens(load_cellfm(path, preset=preset, **kw))


def _load_scgpt(path: Path, preset: str | None = None, **kw):
    from sthinge.io._scgpt import load_scgpt

    net, _ = load_scgpt(path)
    if preset is not None:
        want = _preset_config(preset, net.config.vocab_size - 3)
        dims = ("d_model", "n_heads", "d_hid", "n_layers")
        if any(getattr(want, d) != getattr(net.config, d) for d in dims):
            got = {d: getattr(net.config, d) for d in dims}
            raise ValueError(
                f"`weights` {str(path)!r} holds an scGPT of shape {got}, not the shape of `backbone` {preset!r} "
                f"({ {d: getattr(want, d) for d in dims} }); pass the folder as `backbone=` alone to use its shape."
            )
    return net


def _save_cellfm(net, path: Path, format: str) -> None:
    from sthinge.io._cellfm import save_cellfm

    save_cellfm(net, path, format=format, overwrite=True)


def _save_scgpt(net, path: Path, format: str) -> None:
    from sthinge.io._scgpt import save_scgpt

    save_scgpt(net, path, overwrite=True)


def _is_scgpt_folder(path: Path) -> bool:
    from sthinge.io._scgpt import ARGS_FILE

    return path.is_dir() and (path / ARGS_FILE).is_file()


@dataclasses.dataclass(frozen=True)
class _Family:
    """How sthinge makes, reads and writes one kind of backbone (see :mod:`sthinge.models.backbone`)."""

    kind: str
    new: Any  # (config, vocabulary symbols) -> a randomly initialised backbone
    load: Any  # (path, preset=None, **kw) -> backbone
    save: Any  # (backbone, path, format) -> None
    is_checkpoint: Any  # path -> whether it holds a checkpoint of this kind
    suffix: Any  # format -> file name suffix ("" for a folder)
    weights_file: Any  # checkpoint path -> the file whose sha256 identifies it


def _cellfm_suffix(format: str) -> str:
    from sthinge.tl._pretrain import _FORMATS

    return _FORMATS[format]


_FAMILIES: dict[str, _Family] = {
    "cellfm": _Family(
        "cellfm", _new_cellfm, _load_cellfm, _save_cellfm, lambda p: p.is_file(), _cellfm_suffix, lambda p: p
    ),
    "scgpt": _Family(
        "scgpt", _new_scgpt, _load_scgpt, _save_scgpt, _is_scgpt_folder, lambda f: "", lambda p: p / "best_model.pt"
    ),
}


def _family(obj: Any) -> _Family:
    """The family of a backbone module, configuration, HINGE module or kind name."""
    from sthinge.models.backbone import backbone_kind

    return _FAMILIES[backbone_kind(obj).name]


def _family_of_path(path: Path) -> _Family:
    """The family of a checkpoint on disk: an scGPT folder (with ``args.json``), else a CellFM file."""
    return _FAMILIES["scgpt"] if _FAMILIES["scgpt"].is_checkpoint(path) else _FAMILIES["cellfm"]


def backbone_digest(path: str | os.PathLike) -> str:
    """sha256 of a backbone checkpoint: of the file, or of an scGPT folder's ``best_model.pt`` ("" if absent)."""
    from sthinge.tl._model import _sha256

    path = Path(path)
    weights = _family_of_path(path).weights_file(path)
    return _sha256(weights) if Path(weights).is_file() else ""


def _preset_names() -> list[str]:
    from sthinge.models.backbone import BACKBONES

    return sorted({*CPU_PRESETS, *SCGPT_CPU_PRESETS, *(n for k in BACKBONES.values() for n in k.presets)})


def _preset_config(preset: Any, vocab_size: int):
    """The configuration of a preset name (CellFM's, scGPT's ``"scgpt-..."``, the CPU sizes) or of a configuration,
    for a vocabulary of ``vocab_size`` genes (scGPT configurations add its three special tokens)."""
    from sthinge.models.backbone import BACKBONES, backbone_kind
    from sthinge.models.cellfm import CellFMConfig
    from sthinge.models.scgpt import SPECIAL_TOKENS, ScGPTConfig

    n_tokens = vocab_size + len(SPECIAL_TOKENS)
    if isinstance(preset, str):
        if preset in CPU_PRESETS:
            return CellFMConfig(**{**CPU_PRESETS[preset], "vocab_size": vocab_size})
        if preset in SCGPT_CPU_PRESETS:
            return ScGPTConfig(**{**SCGPT_CPU_PRESETS[preset], "vocab_size": n_tokens, "pad_token_id": vocab_size})
        for kind in BACKBONES.values():
            if preset in kind.presets:
                config = kind.preset(preset)
                if isinstance(config, ScGPTConfig):
                    return dataclasses.replace(config, vocab_size=n_tokens, pad_token_id=vocab_size)
                return dataclasses.replace(config, vocab_size=vocab_size)
        raise ValueError(f"Unknown `preset` {preset!r}; expected one of {_preset_names()} or a backbone configuration.")
    try:
        backbone_kind(preset)
    except TypeError:
        raise TypeError(
            f"`preset` must be a preset name, a CellFMConfig or an ScGPTConfig, got {type(preset).__name__}."
        ) from None
    want = n_tokens if isinstance(preset, ScGPTConfig) else vocab_size
    if preset.vocab_size != want:
        raise ValueError(
            f"`preset` has vocab_size={preset.vocab_size} but `vocab` has {vocab_size} genes"
            f"{' (+3 scGPT special tokens)' if want != vocab_size else ''}; pass a matching `vocab` or set "
            "`vocab_size` in the config."
        )
    return preset


def _resolve_config(preset: Any, vocab_size: int):
    """The backbone configuration to pre-train (see :func:`_preset_config`); CellFM-80M's read-depth tokens refused."""
    config = _preset_config(preset, vocab_size)
    if getattr(config, "st_tokens", False):
        raise ValueError(
            f"`preset` {config.name!r} has CellFM-80M's read-depth (S-T) tokens, which HINGE does not use; pre-train "
            f"without them, e.g. `CellFMConfig.from_preset({config.name!r}, st_tokens=False)`."
        )
    return config


def _without_read_depth_tokens(net):
    """HINGE reads only CLS and the gene tokens: a backbone with CellFM-80M's two read-depth tokens (``ST_emb``,
    ``ST_enc``) is rebuilt without them, as the official HINGE code ignores them when loading the 80M weights."""
    if not getattr(net.config, "st_tokens", False):
        return net
    from sthinge.tl._model import _rebuild

    logg.info(
        "backbone: the read-depth tokens of the CellFM-80M weights (`ST_emb`, `ST_enc`) are not used by HINGE "
        "(as in the official code); the backbone runs with its CLS and gene tokens only."
    )
    return _rebuild(net, dataclasses.replace(net.config, st_tokens=False))


def _file_source(path: Path) -> dict[str, Any]:
    return {"kind": "file", "path": str(path.resolve()), "sha256": backbone_digest(path)}


def _resolve_backbone(backbone: Any, weights: str | os.PathLike | None):
    """Return ``(backbone module, source)`` for a preset name (+ weights), a backbone module, or a checkpoint path."""
    from torch import nn

    from sthinge.models.backbone import BACKBONES, ExpressionBackbone

    presets = {name: kind for kind in BACKBONES.values() for name in kind.presets}
    if isinstance(backbone, nn.Module) and isinstance(backbone, ExpressionBackbone):
        if weights is not None:
            raise ValueError("`weights` is only used with a preset name for `backbone`; got a backbone module.")
        net = _copy.deepcopy(backbone)
        if hasattr(backbone, "vocab"):
            net.vocab = backbone.vocab
        return _without_read_depth_tokens(net), {"kind": "weights", "name": backbone.config.name}
    if isinstance(backbone, str) and backbone in presets:
        family = _FAMILIES[presets[backbone].name]
        if weights is None:
            logg.warning(
                f"`backbone={backbone!r}` without `weights`: the backbone is randomly initialised (no pre-training). "
                "Pass `weights=` (a CellFM .ckpt/.pt, an scGPT checkpoint folder or a backbone from "
                "`tl.pretrain_backbone`) for real use."
            )
            from sthinge._vocab import cellfm_vocab

            symbols = cellfm_vocab(27855)
            return family.new(presets[backbone].preset(backbone), symbols), {
                "kind": "weights",
                "name": backbone,
                "random": True,
            }
        path = Path(weights)
        if not path.exists():
            raise FileNotFoundError(f"`weights` {str(path)!r} not found.")
        return family.load(path, preset=backbone), _file_source(path)
    if isinstance(backbone, str) and backbone == "default":
        if weights is not None:
            raise ValueError("`weights` does not apply to `backbone='default'` (sthinge's own pre-trained backbone).")
        path = default_backbone()  # cached; pre-trained once on Her2ST (patients other than C) when absent
        return _FAMILIES["cellfm"].load(path), _file_source(path)
    if isinstance(backbone, str | os.PathLike):
        path = Path(backbone)
        if not path.exists():
            raise ValueError(
                f"`backbone` must be a preset name ({sorted(presets)}), 'default', a backbone module or an existing "
                f"checkpoint path; got {str(backbone)!r}."
            )
        if weights is not None:
            raise ValueError("Pass either `backbone=<checkpoint path>` or `backbone=<preset>, weights=<path>`.")
        return _family_of_path(path).load(path), _file_source(path)
    raise TypeError(f"`backbone` must be a preset name, a backbone module or a path, got {type(backbone).__name__}.")


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
    preset: str | CellFMConfig | ScGPTConfig | None = None,
    max_epochs: int | None = None,
    path: str | os.PathLike | None = None,
    **overrides: Any,
) -> CellFM | ScGPT:
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

    The hash covers :data:`HER2ST_RECIPE`, the recipe's entry of :data:`CPU_PRESETS` and the sthinge version, so a
    changed recipe builds a new file instead of reusing a stale one.
    """
    from sthinge._settings import settings
    from sthinge._version import __version__

    preset = CPU_PRESETS[HER2ST_RECIPE["preset"]]  # the recipe's size only: adding a preset keeps the cache
    key = json.dumps({"recipe": HER2ST_RECIPE, "presets": preset, "version": __version__}, sort_keys=True)
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
