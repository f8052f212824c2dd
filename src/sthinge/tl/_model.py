"""``HingeModel``: a trained HINGE model with everything needed to predict on new data, and its file format."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from sthinge._logging import logg

FORMAT_VERSION = 1
_MODEL_FILE = "model.pt"


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class HingeModel:
    """A HINGE model trained by :func:`sthinge.tl.fit`, ready for :func:`sthinge.tl.predict`.

    Holds the torch module (:class:`sthinge.models.Hinge`), the gene panel it predicts, the embedding it is
    conditioned on (key, width and the standardisation learnt on the training spots), the expression transform
    of its training layer, where the frozen backbone came from, and the per-epoch training history.

    Use :meth:`save` / :meth:`load` to store it: only what is not frozen is written (SoftAdaLN, condition network,
    and any variant-specific trainable weights), plus a reference (path + sha256) to the backbone file when the
    backbone came from a file, or the backbone's weights when it did not.
    """

    def __init__(
        self,
        module,
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

    # ------------------------------------------------------------------------------------------------
    @property
    def config(self):
        """The :class:`sthinge.models.HingeConfig` of the module."""
        return self.module.config

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
            f"({self.cond_dim}-d), backbone={self.module.backbone_config.name!r}, epochs={len(self.history)})"
        )

    # ------------------------------------------------------------------------------------------------
    def _trainable_names(self) -> set[str]:
        names = {n for n, p in self.module.named_parameters() if p.requires_grad}
        return names | {n for n, _ in self.module.named_buffers()}

    def save(self, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
        """Save the model to the folder ``path`` (atomically: a crash leaves the previous folder or nothing).

        Parameters
        ----------
        path
            Folder to write (created; replaced as a whole if it exists and ``overwrite``).
        overwrite
            Whether an existing folder may be replaced.

        Returns
        -------
        The folder written.
        """
        import torch

        from sthinge._utils import _atomic_path
        from sthinge._version import __version__

        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"`path` {str(path)!r} exists; pass `overwrite=True` to replace it.")
        state = self.module.state_dict()
        keep = self._trainable_names() if self.backbone_source.get("kind") == "file" else set(state)
        payload = {
            "version": __version__,
            "format": FORMAT_VERSION,
            "state_dict": {k: v.detach().cpu().clone() for k, v in state.items() if k in keep},
            "config": dataclasses.asdict(self.module.config),
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
        }
        with _atomic_path(path) as tmp:
            tmp.mkdir()
            torch.save(payload, tmp / _MODEL_FILE)
        logg.info(f"saved HINGE model to {path}")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, backbone: str | os.PathLike | None = None, device: str | None = None):
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        path
            The folder written by :meth:`save`.
        backbone
            Path of the backbone file, when it moved since training (its sha256 must still match).
        device
            Where to put the module (default: CPU).

        Returns
        -------
        The :class:`HingeModel`.
        """
        import torch

        from sthinge._settings import settings
        from sthinge.io import safe_torch_load
        from sthinge.models import CellFM, CellFMConfig, Hinge, HingeConfig

        dev = settings.resolve_device(device) if device is not None else None  # checked before any work
        path = Path(path)
        file = path / _MODEL_FILE if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"`path` {str(path)!r}: no sthinge model there (expected the folder written by "
                                    "`save`).")
        payload = safe_torch_load(file)
        required = ("state_dict", "config", "backbone_config", "var_names", "embedding_key")
        if not isinstance(payload, dict):
            raise ValueError(f"{str(file)!r} is not a sthinge model file (it holds a {type(payload).__name__}).")
        missing = [k for k in required if k not in payload]
        if missing:
            raise ValueError(f"{str(file)!r} is not a sthinge model file (missing {missing}).")
        if not isinstance(payload["state_dict"], dict) or not all(
                isinstance(v, torch.Tensor) for v in payload["state_dict"].values()):
            raise ValueError(f"{str(file)!r}: 'state_dict' must be a dict of tensors.")
        try:
            config = HingeConfig(**payload["config"])
            bconfig = CellFMConfig(**payload["backbone_config"])
        except (TypeError, ValueError) as err:
            raise ValueError(f"{str(file)!r} holds an invalid model configuration: {err}") from None
        source = dict(payload.get("backbone", {"kind": "weights"}))
        if source.get("kind") == "file":
            from sthinge.io import load_cellfm

            bpath = Path(backbone) if backbone is not None else Path(source["path"])
            if not bpath.exists():
                raise FileNotFoundError(
                    f"The model's frozen backbone {str(bpath)!r} is missing; pass `backbone=` with its new location."
                )
            digest = _sha256(bpath) if bpath.is_file() else None
            if digest is not None and source.get("sha256") and digest != source["sha256"]:
                raise ValueError(
                    f"Backbone file {str(bpath)!r} has sha256 {digest[:12]}..., but the model was trained on "
                    f"{source['sha256'][:12]}...; it is not the same backbone."
                )
            net = load_cellfm(bpath, n_heads=bconfig.n_heads)
            if dataclasses.asdict(net.config) != dataclasses.asdict(bconfig):
                net = _rebuild(net, bconfig)
            source["path"] = str(bpath)
        else:
            with torch.device("meta"):
                net = CellFM(bconfig)
            net = net.to_empty(device="cpu")
        gene_ids = payload["state_dict"].get("gg")
        if gene_ids is None:
            raise ValueError(f"{str(file)!r} lacks the gene ids buffer 'gg'.")
        module = Hinge(net, gene_ids, config)
        state = payload["state_dict"]
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
            genes=list(payload["var_names"]),
            symbols=list(payload.get("symbols", payload["var_names"])),
            embedding_key=str(payload["embedding_key"]),
            cond_mean=np.asarray(payload["cond_mean"]),
            cond_std=np.asarray(payload["cond_std"]),
            backbone_source=source,
            layer=payload.get("layer"),
            transform=payload.get("transform"),
            history=payload.get("history"),
            train_sections=payload.get("train_sections"),
        )


def _rebuild(net, config):
    """Rebuild ``net`` with ``config`` (e.g. the numerics profile used in training) and the same weights."""
    from sthinge.models import CellFM

    new = CellFM(config)
    new.load_state_dict(net.state_dict())
    return new
