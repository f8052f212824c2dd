"""Histology encoders for ``pp.embed_histology``: he-stats, UNI, CONCH, any timm model, a user module.

Published formats loaded here (never downloaded; files are read with ``torch.load(weights_only=True)`` or
safetensors):

- UNI (MahmoodLab): ``pytorch_model.bin``, a timm state dict of ``vit_large_patch16_224`` built with
  ``img_size=224, patch_size=16, init_values=1e-5, num_classes=0, dynamic_img_size=True``.
- CONCH (MahmoodLab): ``pytorch_model.bin``, the state dict of the whole CoCa model; the image tower is under
  ``visual.*``: a timm ViT-B/16 trunk at 448 px (``visual.trunk.*``), an attentional pooler with one query
  (``visual.attn_pool_contrast.*``), a layer norm (``visual.ln_contrast.*``) and a 512 x 512 projection
  (``visual.proj_contrast``). The caption pooler (``visual.attn_pool_caption.*``, ``visual.ln_caption.*``) and the
  text tower are not needed and are ignored.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sthinge._state_dict import compare_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

UNI_ARCH = "vit_large_patch16_224"
UNI_KWARGS = {"img_size": 224, "patch_size": 16, "init_values": 1e-5, "num_classes": 0, "dynamic_img_size": True}
CONCH_TRUNK = "vit_base_patch16_224"
CONCH_IMG_SIZE = 448
CONCH_EMBED_DIM = 512
CONCH_IGNORED_VISUAL = ("visual.attn_pool_caption.", "visual.ln_caption.")

BUILTIN = ("he-stats", "uni", "conch", "uni+conch")


@dataclass
class Encoder:
    """A frozen encoder with the input it expects."""

    name: str
    module: Any  # torch.nn.Module: (B, 3, S, S) normalised -> (B, dim)
    input_size: int
    dim: int
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None
    window_factor: float = 1.0  # side of the window read around the spot / tile side
    weights: str | None = None
    transform: Callable | None = None  # replaces mean/std normalisation when given
    feature_names: list[str] | None = None
    extra: dict = field(default_factory=dict)

    def prepare(self, x):
        """``x``: float ``(B, 3, S, S)`` in [0, 1] -> model input."""
        import torch

        if self.transform is not None:
            return self.transform(x)
        if self.mean is None:
            return x
        mean = torch.tensor(self.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return (x - mean) / std


# ---------------------------------------------------------------------------------------------------------
# weight files
# ---------------------------------------------------------------------------------------------------------
def read_state_dict(path: str | os.PathLike, *, argument: str = "weights") -> dict:
    """Read a state dict from ``.bin/.pt/.pth`` (``torch.load(weights_only=True)``) or ``.safetensors``."""
    import torch

    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"`{argument}` must be a path to a local weight file, got {type(path).__name__}.")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"`{argument}` file {str(path)!r} does not exist (weights are never downloaded).")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        sd = load_file(str(path))
    else:
        try:
            try:  # memory-mapped: large checkpoints are paged in as the weights are used
                sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            raise ValueError(f"`{argument}` file {str(path)!r} is not a readable torch state dict: {err}") from err
    for wrapper in ("state_dict", "model"):
        if isinstance(sd, dict) and wrapper in sd and isinstance(sd[wrapper], dict):
            sd = sd[wrapper]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError(f"`{argument}` file {str(path)!r} does not hold a state dict of tensors.")
    return sd


def check_keys(expected: dict, sd: dict, *, what: str, path, ignore: tuple[str, ...] = ()) -> None:
    """``ValueError`` naming missing / unexpected / mis-shaped keys of ``sd`` against ``expected``."""
    problems = compare_state_dict(expected, sd, ignore=ignore).problems()
    if problems:
        raise ValueError(f"`weights` {str(path)!r} does not match the {what} architecture: {'; '.join(problems)}.")


def build_and_load(build: Callable, sd: dict, *, what: str, path, ignore: tuple[str, ...] = ()):
    """Build ``build()`` on the meta device, check ``sd`` against it, then materialise it from ``sd``.

    Mismatched files fail before any memory is allocated, and no time is spent on random initialisation.
    """
    import torch

    with torch.device("meta"):
        model = build()
    expected = model.state_dict()
    check_keys(expected, sd, what=what, path=path, ignore=ignore)
    model.load_state_dict(
        {k: sd[k].to(torch.float32) if sd[k].is_floating_point() else sd[k] for k in expected}, strict=True, assign=True
    )
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):  # non-persistent buffers: build for real
        real = build()
        real.load_state_dict({k: sd[k] for k in expected}, strict=True)
        model = real
    return model


# ---------------------------------------------------------------------------------------------------------
# UNI
# ---------------------------------------------------------------------------------------------------------
def build_uni(**overrides):
    """UNI's ViT-L/16 (randomly initialised); ``overrides`` change timm kwargs (tests use smaller depths)."""
    import timm

    return timm.create_model(UNI_ARCH, pretrained=False, **{**UNI_KWARGS, **overrides})


def uni_encoder(weights, **overrides) -> Encoder:
    sd = read_state_dict(weights)
    model = build_and_load(
        lambda: build_uni(**overrides), sd, path=weights, what="UNI (timm vit_large_patch16_224, init_values=1e-5)"
    )
    return Encoder("uni", model.eval(), 224, int(model.num_features), IMAGENET_MEAN, IMAGENET_STD, weights=str(weights))


# ---------------------------------------------------------------------------------------------------------
# CONCH
# ---------------------------------------------------------------------------------------------------------
def _conch_classes():
    import torch
    from torch import nn

    class AttentionalPooler(nn.Module):
        """CoCa's attentional pooler: learned queries attend to the trunk tokens."""

        def __init__(self, d_model: int, context_dim: int, n_head: int = 8, n_queries: int = 1) -> None:
            super().__init__()
            self.query = nn.Parameter(torch.randn(n_queries, d_model))
            self.attn = nn.MultiheadAttention(d_model, n_head, kdim=context_dim, vdim=context_dim)
            self.ln_q = nn.LayerNorm(d_model)
            self.ln_k = nn.LayerNorm(context_dim)

        def forward(self, x):  # (B, L, context_dim) -> (B, n_queries, d_model)
            x = self.ln_k(x).permute(1, 0, 2)  # (L, B, C)
            q = self.ln_q(self.query).unsqueeze(1).expand(-1, x.shape[1], -1)  # (Q, B, D)
            out = self.attn(q, x, x, need_weights=False)[0]
            return out.permute(1, 0, 2)

    class ConchVision(nn.Module):
        """CONCH's image tower (contrastive branch): ViT-B/16 trunk at 448 px + attentional pooler -> 512-d."""

        def __init__(
            self, embed_dim: int = CONCH_EMBED_DIM, trunk_kwargs: dict | None = None, project: bool = False
        ) -> None:
            super().__init__()
            import timm

            kwargs = {"img_size": CONCH_IMG_SIZE, "num_classes": 0, "global_pool": "", **(trunk_kwargs or {})}
            self.trunk = timm.create_model(CONCH_TRUNK, pretrained=False, **kwargs)
            width = self.trunk.num_features
            self.attn_pool_contrast = AttentionalPooler(embed_dim, width, n_head=8, n_queries=1)
            self.ln_contrast = nn.LayerNorm(embed_dim)
            self.proj_contrast = nn.Parameter(width**-0.5 * torch.randn(embed_dim, embed_dim))
            self.project = project

        def forward(self, x):  # (B, 3, 448, 448) -> (B, 512)
            tokens = self.trunk.forward_features(x)  # (B, 1 + L, 768), after the trunk's final norm
            pooled = self.ln_contrast(self.attn_pool_contrast(tokens)[:, 0])
            if self.project:  # CONCH's encode_image(proj_contrast=True, normalize=True)
                pooled = nn.functional.normalize(pooled @ self.proj_contrast, dim=-1)
            return pooled

    return AttentionalPooler, ConchVision


def build_conch_vision(**kwargs):
    return _conch_classes()[1](**kwargs)


def conch_encoder(weights, *, project: bool = False, **trunk_overrides) -> Encoder:
    sd = read_state_dict(weights)
    visual = {k[len("visual.") :]: v for k, v in sd.items() if k.startswith("visual.")}
    if not visual:
        raise ValueError(
            f"`weights` {str(weights)!r} holds no 'visual.*' key: expected CONCH's pytorch_model.bin (the whole CoCa "
            f"state dict); found keys such as {list(sd)[:5]}."
        )
    ignore = tuple(p[len("visual.") :] for p in CONCH_IGNORED_VISUAL)
    model = build_and_load(
        lambda: build_conch_vision(trunk_kwargs=trunk_overrides or None, project=project),
        visual,
        what="CONCH vision tower (visual.*)",
        path=weights,
        ignore=ignore,
    )
    return Encoder(
        "conch",
        model.eval(),
        CONCH_IMG_SIZE,
        CONCH_EMBED_DIM,
        OPENAI_CLIP_MEAN,
        OPENAI_CLIP_STD,
        weights=str(weights),
        extra={"output": "projected+normalised" if project else "ln_contrast"},
    )


# ---------------------------------------------------------------------------------------------------------
# timm / user modules / he-stats
# ---------------------------------------------------------------------------------------------------------
def timm_encoder(name: str, weights) -> Encoder:
    import timm

    if not timm.list_models(name):
        raise ValueError(
            f"Unknown `encoder` {name!r}: expected one of {list(BUILTIN)}, a timm model name or a torch.nn.Module."
        )
    if weights is None:
        raise ValueError(
            f"`weights` is required for the timm encoder {name!r} (a local state-dict file); pass "
            "`weights='random'` to use random weights on purpose (e.g. for testing)."
        )
    if isinstance(weights, str) and weights == "random":
        warnings.warn(
            f"encoder {name!r} uses RANDOM weights (`weights='random'`): features carry no histology knowledge.",
            UserWarning,
            stacklevel=3,
        )
        model = timm.create_model(name, pretrained=False, num_classes=0)
    else:
        sd = read_state_dict(weights)
        model = build_and_load(
            lambda: timm.create_model(name, pretrained=False, num_classes=0),
            sd,
            what=f"timm {name}",
            path=weights,
            ignore=("head.", "fc.", "classifier."),
        )
    cfg = timm.data.resolve_model_data_config(model)
    size = int(cfg["input_size"][-1])
    return Encoder(
        name,
        model.eval(),
        size,
        int(model.num_features),
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        weights=None if weights == "random" else str(weights),
    )


def module_encoder(module, *, input_size: int, transform: Callable | None) -> Encoder:
    import torch

    module = module.eval()
    with torch.inference_mode():
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
        probe = torch.zeros(1, 3, input_size, input_size, device=device)
        out = module(transform(probe) if transform is not None else probe)
    if out.ndim != 2:
        raise ValueError(f"The `encoder` module must return (batch, dim) features; got shape {tuple(out.shape)}.")
    return Encoder(
        type(module).__name__,
        module,
        input_size,
        int(out.shape[1]),
        None if transform is not None else IMAGENET_MEAN,
        None if transform is not None else IMAGENET_STD,
        transform=transform,
    )


def he_stats() -> Encoder:
    from sthinge.pp import _he_stats

    module = _he_stats.he_stats_encoder()
    names = _he_stats.feature_names()
    return Encoder(
        "he-stats", module, _he_stats.INPUT_SIZE, len(names), window_factor=_he_stats.WINDOW_FACTOR, feature_names=names
    )
