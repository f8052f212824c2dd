"""``HingeModel``: a trained HINGE model with everything needed to predict on new data, and its file format."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge._logging import logg

if TYPE_CHECKING:  # pragma: no cover
    from sthinge.models import Hinge, HingeConfig
    from sthinge.tl._conformal import Calibration

FORMAT_VERSION = 1
_MODEL_FILE = "model.pt"


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# validation of a model file (everything checked before anything heavy is built)
# ----------------------------------------------------------------------------------------------------------------
_REQUIRED = ("state_dict", "config", "backbone_config", "var_names", "embedding_key", "cond_mean", "cond_std")


def _check_backbone_argument(backbone: Any) -> Path | None:
    """The ``backbone`` argument of :meth:`HingeModel.load`: None, or an existing file or scGPT checkpoint folder
    (checked always)."""
    if backbone is None:
        return None
    if not isinstance(backbone, str | os.PathLike):
        raise TypeError(f"`backbone` must be the path of a backbone file, got {type(backbone).__name__}.")
    bpath = Path(backbone).expanduser()
    if not bpath.exists():
        raise FileNotFoundError(f"`backbone` {str(bpath)!r} does not exist.")
    if bpath.is_dir():
        from sthinge.tl._backbone import _family_of_path

        if not _family_of_path(bpath).is_checkpoint(bpath):
            raise IsADirectoryError(
                f"`backbone` {str(bpath)!r} is a folder but not an scGPT checkpoint folder (no args.json); pass the "
                "backbone file inside it."
            )
    return bpath


def _is_number(x: Any) -> bool:
    import numbers

    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _vector(payload: dict, key: str, n: int, where: str) -> np.ndarray:
    """``payload[key]`` as a finite float32 vector of length ``n`` (``cond_mean`` / ``cond_std``)."""
    import torch

    raw = payload[key]
    if isinstance(raw, torch.Tensor):
        raw = raw.detach().cpu().numpy()
    try:
        arr = np.asarray(raw)
    except (TypeError, ValueError):  # pragma: no cover - ragged input
        raise ValueError(f"{where}: field {key!r} must be a vector of numbers.") from None
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"{where}: field {key!r} must be a vector of numbers, got dtype {arr.dtype}.")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(
            f"{where}: field {key!r} has shape {list(arr.shape)}, but the model's embedding width "
            f"(config.cond_dim) is {n}."
        )
    arr = arr.astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(
            f"{where}: field {key!r} holds {bad.size} NaN or infinite value(s) (first at index {int(bad[0])})."
        )
    return arr


def _str_list(payload: dict, key: str, where: str, *, default: Any = None) -> list[str]:
    value = payload.get(key, default)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: field {key!r} must be a list of strings, got {type(value).__name__}.")
    return list(value)


def _read_payload(payload: Any, file: Path) -> dict[str, Any]:
    """Validate every field of a loaded model file; return them, cleaned. Errors name the file and the field."""
    import torch

    from sthinge._version import __version__
    from sthinge.models import HingeConfig
    from sthinge.models.backbone import BACKBONES

    where = repr(str(file))
    if not isinstance(payload, dict):
        raise ValueError(f"{where} is not a sthinge model file (it holds a {type(payload).__name__}).")
    # ---- format first: a newer file may have other fields
    written_by = payload.get("version", "unknown")
    if "version" in payload and not isinstance(written_by, str):
        raise ValueError(f"{where}: field 'version' must be a string, got {type(written_by).__name__}.")
    if "format" not in payload:
        raise ValueError(f"{where} is not a sthinge model file (missing ['format'], the format version).")
    fmt = payload["format"]
    if isinstance(fmt, bool) or not isinstance(fmt, int) or fmt < 1:
        raise ValueError(f"{where}: field 'format' must be a positive integer (the format version), got {fmt!r}.")
    if fmt > FORMAT_VERSION:
        raise ValueError(
            f"{where} was written by sthinge {written_by} (model format {fmt}), a newer format than this sthinge "
            f"{__version__} reads (format {FORMAT_VERSION}); upgrade sthinge to load it."
        )
    missing = [k for k in _REQUIRED if k not in payload]
    if missing:
        raise ValueError(f"{where} is not a sthinge model file (missing {missing}).")
    # ---- weights
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{where}: 'state_dict' must be a dict of tensors.")
    for name, value in state.items():
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"{where}: weight {name!r} of 'state_dict' holds {n_bad} NaN or infinite value(s); the "
                "model file is corrupt."
            )
    # ---- configurations
    for key in ("config", "backbone_config"):
        if not isinstance(payload[key], dict):
            raise ValueError(f"{where}: field {key!r} must be a dict, got {type(payload[key]).__name__}.")
    try:
        config = HingeConfig(**payload["config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} holds an invalid model configuration (field 'config'): {err}") from None
    kind_name = payload.get("backbone_kind", "cellfm")  # files before HINGE on scGPT hold a CellFM
    if kind_name not in BACKBONES:
        raise ValueError(f"{where}: field 'backbone_kind' must be one of {sorted(BACKBONES)}, got {kind_name!r}.")
    kind = BACKBONES[kind_name]
    try:
        bconfig = kind.make_config(payload["backbone_config"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where} holds an invalid model configuration (field 'backbone_config'): {err}") from None
    # ---- where the backbone comes from
    source = payload.get("backbone", {"kind": "weights"})
    if not isinstance(source, dict) or source.get("kind") not in ("file", "weights"):
        raise ValueError(f"{where}: field 'backbone' must be a dict with 'kind' 'file' or 'weights', got {source!r}.")
    source = dict(source)
    if source["kind"] == "file" and (
        not isinstance(source.get("path"), str) or not source["path"] or not isinstance(source.get("sha256", ""), str)
    ):
        raise ValueError(
            f"{where}: field 'backbone' of a file-backed model needs a 'path' and a 'sha256' string, got {source!r}."
        )
    # ---- genes: names, symbols, ids
    gene_ids = state.get("gg")
    if gene_ids is None:
        raise ValueError(f"{where} lacks the gene ids buffer 'gg' in 'state_dict'.")
    if gene_ids.ndim != 1 or gene_ids.is_floating_point() or gene_ids.is_complex() or gene_ids.dtype == torch.bool:
        raise ValueError(
            f"{where}: gene ids 'gg' must be a 1-d integer tensor, got {gene_ids.dtype} of shape "
            f"{list(gene_ids.shape)}."
        )
    n_genes = int(gene_ids.numel())
    if n_genes != config.n_genes:
        raise ValueError(
            f"{where}: 'state_dict' holds {n_genes} gene ids 'gg', but field 'config' says n_genes={config.n_genes}."
        )
    lo, hi = kind.first_gene_id, kind.first_gene_id + bconfig.vocab_size - 1
    if n_genes and (int(gene_ids.min()) < lo or int(gene_ids.max()) > hi):
        raise ValueError(
            f"{where}: gene ids 'gg' must lie in {lo}..{hi} (the backbone's vocabulary), "
            f"got {int(gene_ids.min())}..{int(gene_ids.max())}."
        )
    var_names = _str_list(payload, "var_names", where)
    empty = [i for i, g in enumerate(var_names) if not g.strip()]
    if empty:
        raise ValueError(f"{where}: field 'var_names' holds {len(empty)} empty name(s) (first at position {empty[0]}).")
    seen: set[str] = set()
    dups = sorted({g for g in var_names if g in seen or seen.add(g)})
    if dups:
        raise ValueError(
            f"{where}: field 'var_names' holds duplicated names {dups[:5]}"
            f"{' ...' if len(dups) > 5 else ''} ({len(dups)} in all); gene names must be unique."
        )
    if len(var_names) != n_genes:
        raise ValueError(
            f"{where}: field 'var_names' has {len(var_names)} names, but the model has {n_genes} gene ids 'gg'."
        )
    symbols = _str_list(payload, "symbols", where, default=var_names)
    if len(symbols) != n_genes:
        raise ValueError(
            f"{where}: field 'symbols' has {len(symbols)} names, but the model has {n_genes} gene ids 'gg'."
        )
    _check_symbols(symbols, var_names, gene_ids, kind, bconfig, where)
    # ---- conditioning, and the rest
    cond_mean = _vector(payload, "cond_mean", config.cond_dim, where)
    cond_std = _vector(payload, "cond_std", config.cond_dim, where)
    if (cond_std <= 0).any():
        i = int(np.flatnonzero(cond_std <= 0)[0])
        raise ValueError(
            f"{where}: field 'cond_std' must be > 0 everywhere (it divides the embeddings), got "
            f"{float(cond_std[i])} at index {i}."
        )
    key = payload["embedding_key"]
    if not isinstance(key, str) or not key:
        raise ValueError(f"{where}: field 'embedding_key' must be a non-empty string, got {key!r}.")
    layer = payload.get("layer")
    if layer is not None and not isinstance(layer, str):
        raise ValueError(f"{where}: field 'layer' must be a string or None, got {type(layer).__name__}.")
    train_sections = _str_list(payload, "train_sections", where, default=[])
    history = payload.get("history", [])
    if not isinstance(history, list) or not all(
        isinstance(h, dict) and all(isinstance(k, str) and _is_number(v) for k, v in h.items()) for h in history
    ):
        raise ValueError(f"{where}: field 'history' must be a list of dicts of numbers (one per epoch).")
    transform = payload.get("transform", {})
    if not isinstance(transform, dict) or not all(isinstance(k, str) for k in transform):
        raise ValueError(f"{where}: field 'transform' must be a dict, got {type(transform).__name__}.")
    calibration = payload.get("calibration")
    if calibration is not None:
        from sthinge.tl._conformal import Calibration

        try:
            calibration = Calibration.from_dict(calibration, len(var_names))
        except ValueError as err:
            raise ValueError(f"{where}: field 'calibration': {err}") from None
    return {
        "state": state,
        "config": config,
        "backbone_kind": kind,
        "backbone_config": bconfig,
        "backbone": source,
        "var_names": var_names,
        "symbols": symbols,
        "embedding_key": key,
        "cond_mean": cond_mean,
        "cond_std": cond_std,
        "layer": layer,
        "transform": dict(transform),
        "history": list(history),
        "train_sections": train_sections,
        "calibration": calibration,
        "embedding": _embedding_recipe(payload.get("embedding"), config.cond_dim, where),
    }


def _check_symbols(symbols: list[str], var_names: list[str], gene_ids, kind, bconfig, where: str) -> None:
    """The vocabulary symbol of each gene must have the gene's id in 'gg' (as ``tl.fit`` built it).

    Only where the backbone's vocabulary is known without its weights (CellFM's shipped vocabularies; an scGPT
    vocabulary lives in its checkpoint folder); symbols outside the vocabulary (a model built by hand) are not checked.
    """
    import torch

    with torch.device("meta"):
        net = kind.module(bconfig)
    try:
        vocabulary = net.vocabulary()
    except ValueError:
        return
    index = {g: i + kind.first_gene_id for i, g in enumerate(vocabulary)}
    ids = gene_ids.tolist()
    wrong = [i for i, s in enumerate(symbols) if s in index and index[s] != ids[i]]
    if wrong:
        i = wrong[0]
        raise ValueError(
            f"{where}: field 'symbols' does not match the gene ids 'gg': {len(wrong)} gene(s) differ, e.g. gene "
            f"{var_names[i]!r} (symbol {symbols[i]!r}) has id {index[symbols[i]]} in the backbone's vocabulary but id "
            f"{ids[i]} in the file."
        )


FIT_LIKELIHOOD = "gaussian"
"""The decoder ``tl.fit`` trains when its ``config`` does not name one (``HingeConfig``'s own default is the paper's
``"point"``); measured in ``docs/benchmarks.md`` (uncertainty section)."""

FIT_MODULATION = "hidden"
"""What the condition modulates when ``tl.fit``'s ``config`` does not say (``HingeConfig``'s own default is the
paper's ``"paper"``); chosen by the oracle diagnostic in ``docs/benchmarks.md``."""


FIT_LR = (1e-4, 1536, 1e-3)
"""``tl.fit``'s default learning rate: ``(lr_ref, width_ref, lr_max)``, see :func:`default_lr`."""


def default_lr(d_model: int) -> float:
    """``tl.fit``'s learning rate for a backbone of width ``d_model`` when ``lr`` is not given.

    The paper's 1e-4 (App. A.6) at CellFM's width 1536, scaled inversely with the width as Adam's step is in
    μP (Yang et al. 2022), at most 1e-3: 1e-4 for CellFM 80M / 800M, 3e-4 for scGPT whole-human (512), 1e-3 for
    sthinge's 128-wide offline stand-ins, whose zero-initialised modulators barely move in 30 epochs at 1e-4
    (``docs/benchmarks.md``, the oracle diagnostic).
    """
    lr_ref, width_ref, lr_max = FIT_LR
    return float(min(lr_max, lr_ref * width_ref / int(d_model)))


def _hinge_config(config: Any, n_genes: int, cond_dim: int):
    from sthinge.models import HingeConfig

    if config is None:
        config = {}
    if isinstance(config, HingeConfig):
        config = dataclasses.asdict(config)
    if not isinstance(config, dict):
        raise TypeError(f"`config` must be a dict of HingeConfig fields or a HingeConfig, got {type(config).__name__}.")
    # a HingeConfig given as such keeps its own; Gauss-Diff is a point model (its sampler draws no values)
    default = "point" if config.get("objective") == "gauss-diff" else FIT_LIKELIHOOD
    modulation = FIT_MODULATION if config.get("variant") != "hist-affine-ln" else "paper"
    config = {"likelihood": default, "modulation": modulation, **config}
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


class HingeModel:
    """A HINGE model trained by :func:`sthinge.tl.fit`, ready for :func:`sthinge.tl.predict`.

    Holds the torch module (:class:`sthinge.models.Hinge`), the gene panel it predicts, the embedding it is
    conditioned on (key, width and the standardisation learnt on the training spots), the expression transform
    of its training layer, where the frozen backbone came from, the per-epoch training history and, once
    calibrated (by :func:`sthinge.tl.fit` or :func:`sthinge.tl.calibrate`), the per-gene split-conformal
    calibration of its prediction intervals (:attr:`calibration`).

    Use :meth:`save` / :meth:`load` to store it: only what is not frozen is written (SoftAdaLN, condition network,
    and any variant-specific trainable weights), plus a reference (path + sha256) to the backbone file when the
    backbone came from a file, or the backbone's weights when it did not.
    """

    def __init__(
        self,
        module: Hinge,
        *,
        genes: list[str],
        symbols: list[str] | None = None,
        embedding_key: str,
        cond_mean: np.ndarray | None = None,
        cond_std: np.ndarray | None = None,
        backbone_source: dict[str, Any] | None = None,
        layer: str | None = None,
        transform: dict[str, Any] | None = None,
        history: list[dict[str, float]] | None = None,
        train_sections: list[str] | None = None,
        calibration: Calibration | None = None,
        embedding: dict[str, Any] | None = None,
    ) -> None:
        self.module = module
        self.genes = list(genes)
        self.symbols = list(symbols) if symbols is not None else list(genes)
        self.embedding_key = embedding_key
        cond_dim = module.config.cond_dim
        self.cond_mean = np.zeros(cond_dim, np.float32) if cond_mean is None else np.asarray(cond_mean, np.float32)
        self.cond_std = np.ones(cond_dim, np.float32) if cond_std is None else np.asarray(cond_std, np.float32)
        self.backbone_source = backbone_source or {"kind": "weights"}
        self.layer = layer
        self.transform = dict(transform or {})
        self.history = list(history or [])
        self.train_sections = list(train_sections or [])
        self.calibration = calibration
        self.embedding = dict(embedding) if embedding else None
        n_genes = int(module.config.n_genes)
        for name, names in (("genes", self.genes), ("symbols", self.symbols)):
            if len(names) != n_genes:
                raise ValueError(f"`{name}` has {len(names)} names, but `module` predicts {n_genes} genes.")
        if calibration is not None and calibration.scale.shape[1] != n_genes:
            raise ValueError(f"`calibration` covers {calibration.scale.shape[1]} genes, the module {n_genes}.")
        for name, vec in (("cond_mean", self.cond_mean), ("cond_std", self.cond_std)):
            if vec.shape != (cond_dim,):
                raise ValueError(f"`{name}` must have shape ({cond_dim},) (the module's cond_dim), got {vec.shape}.")

    # ------------------------------------------------------------------------------------------------
    @property
    def config(self) -> HingeConfig:
        """The :class:`sthinge.models.HingeConfig` of the module."""
        return self.module.config

    @property
    def embedding_recipe(self) -> dict[str, Any] | None:
        """How the training embeddings were made (``None`` when they did not come from
        :func:`sthinge.pp.embed_histology`): ``encoder``, ``weights`` (paths) and ``weights_sha256``,
        ``tile_size_um``, ``input_size``, ``mean`` / ``std`` (the tile normalisation) and ``dim``.
        :func:`sthinge.tl.predict_cohort` embeds new slides the same way."""
        return None if self.embedding is None else dict(self.embedding)

    @property
    def n_genes(self) -> int:
        """Number of genes in the panel."""
        return len(self.genes)

    @property
    def cond_dim(self) -> int:
        """Width of the histology embedding the model expects."""
        return int(self.module.config.cond_dim)

    def standardize(self, emb: np.ndarray) -> np.ndarray:
        """Standardise embeddings with the statistics of the training spots."""
        return ((np.asarray(emb, np.float32) - self.cond_mean) / self.cond_std).astype(np.float32)

    def __repr__(self) -> str:
        c = self.config
        return (
            f"HingeModel(variant={c.variant!r}, genes={self.n_genes}, embedding={self.embedding_key!r} "
            f"({self.cond_dim}-d), backbone={self.module.backbone_config.name!r}, epochs={len(self.history)}, "
            f"calibrated={'no' if self.calibration is None else f'{self.calibration.n} spots'})"
        )

    # ------------------------------------------------------------------------------------------------
    def _trainable_names(self) -> set[str]:
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        return names | {n for n, _ in self.module.named_buffers()}

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Save the model to the folder ``path``, as ``path/model.pt`` (written atomically).

        Parameters
        ----------
        path
            Folder to write (created if needed). An existing file is never replaced by the folder.
        overwrite
            Whether an existing folder that is not empty may be written to. Only its ``model.pt`` is then
            replaced (atomically: a crash leaves the previous file); no other file in the folder is touched.

        Returns
        -------
        The folder written.

        Raises
        ------
        FileExistsError
            If ``path`` is an existing file, or a folder that is not empty and ``overwrite`` is False, or if
            ``path/model.pt`` is a folder.
        PermissionError
            If the folder cannot be written.
        """
        import torch

        from sthinge._utils import _check_output_path, _probe_write
        from sthinge._version import __version__
        from sthinge.io._torch import atomic_save
        from sthinge.models.backbone import backbone_kind

        # ---- every check before any write ---------------------------------------------------------------
        path = _check_output_path("path", path, overwrite=overwrite, kind="folder")
        file = path / _MODEL_FILE
        if file.is_dir():
            raise FileExistsError(
                f"`path` {str(path)!r}: {str(file)!r} is a folder, not a model file; it is never "
                "replaced. Choose another path."
            )
        if path.is_dir():
            try:
                _probe_write(path)
            except OSError as err:
                raise PermissionError(f"`path` {str(path)!r} is not writable ({err.strerror or err}).") from None
        state = self.module.state_dict()
        keep = self._trainable_names() if self.backbone_source.get("kind") == "file" else set(state)
        payload = {
            "version": __version__,
            "format": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu().clone() for k, v in state.items() if k in keep},
            "config": dataclasses.asdict(self.module.config),
            "backbone_kind": backbone_kind(self.module).name,
            "backbone_config": dataclasses.asdict(self.module.backbone_config),
            "backbone": dict(self.backbone_source),
            "var_names": list(self.genes),
            "symbols": list(self.symbols),
            "embedding_key": self.embedding_key,
            "cond_mean": torch.from_numpy(self.cond_mean.copy()),
            "cond_std": torch.from_numpy(self.cond_std.copy()),
            "layer": self.layer,
            "transform": {k: v for k, v in self.transform.items() if isinstance(v, str | int | float | bool)},
            "history": [{k: float(v) for k, v in h.items()} for h in self.history],
            "train_sections": list(self.train_sections),
            "calibration": None if self.calibration is None else self.calibration.to_dict(),
            "embedding": self.embedding,
        }
        created = [p for p in (path, *path.parents) if not p.exists()]  # folders made here, removed on failure
        try:
            path.mkdir(parents=True, exist_ok=True)
            atomic_save(payload, file)  # the same model gives the same bytes
        except BaseException:
            for folder in created:  # innermost first; only if still empty
                try:
                    folder.rmdir()
                except OSError:
                    break
            raise
        logg.info(f"saved HINGE model to {path}")
        return path

    @classmethod
    def load(
        cls, path: str | os.PathLike, *, backbone: str | os.PathLike | None = None, device: str | None = None
    ) -> HingeModel:
        """Load a model saved with :meth:`save`, validating every field of the file first.

        Parameters
        ----------
        path
            The folder written by :meth:`save` (or its ``model.pt``).
        backbone
            Path of the backbone file (an scGPT checkpoint folder for HINGE on scGPT), when it moved since training
            (its sha256 must still match). Only for models
            whose backbone came from a file; a model that stores its own backbone weights refuses it.
        device
            Where to put the module (default: CPU).

        Returns
        -------
        The :class:`HingeModel`.

        Raises
        ------
        FileNotFoundError
            If ``path`` holds no model, if ``backbone`` is given and does not exist, or if the model's backbone file
            is missing.
        ValueError
            If the file is not a valid sthinge model (each message names the file and the field), was written by a
            newer sthinge, or if ``backbone`` is given for a model that stores its own backbone weights.
        """

        from sthinge._settings import settings
        from sthinge.io import safe_torch_load
        from sthinge.tl._backbone import _family, backbone_digest

        dev = settings.resolve_device(device) if device is not None else None  # checked before any work
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"`path` must be a path, got {type(path).__name__}.")
        path = Path(path).expanduser()
        file = path / _MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(
                f"`path` {str(path)!r}: no sthinge model there (expected the folder written by `save`)."
            )
        given = _check_backbone_argument(backbone)
        fields = _read_payload(safe_torch_load(file), file)  # every field checked before anything is built
        config, bconfig, kind = fields["config"], fields["backbone_config"], fields["backbone_kind"]
        source, state = fields["backbone"], fields["state"]
        if source["kind"] == "file":
            bpath = given if given is not None else Path(source["path"])
            if not bpath.exists():
                raise FileNotFoundError(
                    f"The model's frozen backbone {str(bpath)!r} is missing; pass `backbone=` with its new location."
                )
            digest = backbone_digest(bpath) or None
            if digest is not None and source.get("sha256") and digest != source["sha256"]:
                raise ValueError(
                    f"Backbone file {str(bpath)!r} has sha256 {digest[:12]}..., but the model was trained on "
                    f"{source['sha256'][:12]}...; it is not the same backbone."
                )
            net = _family(kind.name).load(bpath, n_heads=bconfig.n_heads)
            if dataclasses.asdict(net.config) != dataclasses.asdict(bconfig):
                net = _rebuild(net, bconfig)
            source["path"] = str(bpath)
        else:
            if given is not None:
                raise ValueError(
                    f"`backbone` does not apply: {str(file)!r} stores its own backbone weights, so the argument is "
                    f"not used (it was {str(given)!r}). Call `load` without `backbone=`."
                )
            net = kind.empty(bconfig)
        module = kind.hinge.from_state(net, state, config)
        expected = set(module.state_dict())
        unexpected = sorted(set(state) - expected)
        if unexpected:
            raise ValueError(f"{str(file)!r} holds unexpected weights: {unexpected[:5]}.")
        if source.get("kind") != "file":
            missing = sorted(expected - set(state))
            if missing:
                raise ValueError(f"{str(file)!r} misses weights: {missing[:5]}.")
        shapes = module.state_dict()
        wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(shapes[k].shape)]
        if wrong:
            k = wrong[0]
            raise ValueError(
                f"{str(file)!r}: {len(wrong)} weight(s) do not fit the model's configuration, e.g. weight {k!r} has "
                f"shape {list(state[k].shape)}, the model expects {list(shapes[k].shape)}."
            )
        module.load_state_dict(state, strict=False)
        module.eval()
        if dev is not None:
            module.to(dev)
        return cls(
            module,
            genes=fields["var_names"],
            symbols=fields["symbols"],
            embedding_key=fields["embedding_key"],
            cond_mean=fields["cond_mean"],
            cond_std=fields["cond_std"],
            backbone_source=source,
            layer=fields["layer"],
            transform=fields["transform"],
            history=fields["history"],
            train_sections=fields["train_sections"],
            calibration=fields["calibration"],
            embedding=fields["embedding"],
        )


_RECIPE_KEYS = {"encoder": str, "tile_size_um": float, "dim": int}


def _embedding_recipe(recipe, cond_dim: int, where: str) -> dict[str, Any] | None:
    """The ``embedding`` field of a model file: None (older files, or embeddings not made by sthinge) or a dict."""
    if recipe is None:
        return None
    if not isinstance(recipe, dict):
        raise ValueError(f"{where}: field 'embedding' must be a dict or None, got {type(recipe).__name__}.")
    for key, kind in _RECIPE_KEYS.items():
        value = recipe.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is not str and not value > 0):
            raise ValueError(f"{where}: field 'embedding' has a bad {key!r}: {value!r}.")
    if recipe["dim"] != cond_dim:
        raise ValueError(
            f"{where}: field 'embedding' says the embeddings are {recipe['dim']}-d, the model's cond_dim is {cond_dim}."
        )
    return dict(recipe)


def embedding_recipe_of(table, embedding_key: str) -> dict[str, Any] | None:
    """What :func:`sthinge.pp.embed_histology` recorded in ``uns[embedding_key]``, with the sha256 of each weight
    file; None when the embedding was not made by it (then predicting on new slides needs ``encoder=``)."""
    info = table.uns.get(embedding_key)
    if not isinstance(info, dict) or not isinstance(info.get("encoder"), str) or "tile_size_um" not in info:
        return None
    weights = info.get("weights")
    paths = dict(weights) if isinstance(weights, dict) else ({} if weights in (None, "random") else {"": weights})
    sha = {}
    for name, path in paths.items():
        try:
            sha[name] = _sha256(path)
        except OSError:
            sha[name] = None  # moved since embedding: recorded as unknown
    recipe = {
        "encoder": str(info["encoder"]),
        "weights": weights if isinstance(weights, dict | str) or weights is None else str(weights),
        "weights_sha256": sha.get("") if set(sha) == {""} else (sha or None),
        "tile_size_um": float(info["tile_size_um"]),
        "input_size": [int(v) for v in np.atleast_1d(info.get("input_size", []))],
        "mean": [[float(x) for x in m] for m in info.get("mean", [])],
        "std": [[float(x) for x in m] for m in info.get("std", [])],
        "dim": int(info.get("dim", 0)),
    }
    return recipe


def _rebuild(net, config):
    """Rebuild ``net`` with ``config`` (e.g. the numerics profile used in training) and the same weights.

    Weights the new configuration has no place for are left out (HINGE drops CellFM-80M's read-depth tokens, see
    ``tl.fit``); every weight it has must come from ``net``.
    """
    new = type(net)(config)
    keys = set(new.state_dict())
    new.load_state_dict({k: v for k, v in net.state_dict().items() if k in keys})
    if getattr(net, "vocab", None) is not None:
        new.vocab = net.vocab
    return new
