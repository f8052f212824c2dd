"""``pp.embed_histology``: one histology embedding per spot from a tile of fixed physical size."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._docs import _doc
from sthinge._logging import logg, progress
from sthinge._utils import _check_float, _check_int, _check_overwrite, _is_spatialdata
from sthinge.pp import _encoders as E
from sthinge.pp._common import _check_bool, _check_key, _section_labels, _table_for

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from spatialdata import SpatialData


def _check_weights(encoder, weights) -> None:
    if encoder == "uni+conch":
        if not isinstance(weights, Mapping) or set(weights) != {"uni", "conch"}:
            raise TypeError("`weights` for encoder 'uni+conch' must be a dict {'uni': path, 'conch': path}.")
        for k in ("uni", "conch"):
            if not isinstance(weights[k], str | os.PathLike):
                raise TypeError(f"`weights['{k}']` must be a path, got {type(weights[k]).__name__}.")
            if not os.path.isfile(os.path.expanduser(weights[k])):
                raise FileNotFoundError(f"`weights['{k}']` file {str(weights[k])!r} does not exist.")
    elif encoder in ("uni", "conch"):
        if weights is None:
            raise ValueError(
                f"encoder {encoder!r} needs `weights=`: the path of the published pytorch_model.bin "
                "(gated download from the authors; sthinge never downloads weights)."
            )
        if not isinstance(weights, str | os.PathLike):
            raise TypeError(f"`weights` must be a path, got {type(weights).__name__}.")
        if not os.path.isfile(os.path.expanduser(weights)):
            raise FileNotFoundError(f"`weights` file {str(weights)!r} does not exist.")
    elif encoder == "he-stats" and weights is not None:
        raise ValueError("encoder 'he-stats' has no weights; leave `weights=None`.")


def _build_encoders(encoder, weights, *, input_size, transform) -> list[E.Encoder]:
    import torch

    if isinstance(encoder, torch.nn.Module):
        return [E.module_encoder(encoder, input_size=input_size or 224, transform=transform)]
    if encoder == "he-stats":
        return [E.he_stats()]
    if encoder == "uni":
        return [E.uni_encoder(weights)]
    if encoder == "conch":
        return [E.conch_encoder(weights)]
    if encoder == "uni+conch":
        return [E.uni_encoder(weights["uni"]), E.conch_encoder(weights["conch"])]
    return [E.timm_encoder(encoder, weights)]


def _autocast_dtype(dev):
    """bfloat16 where the device runs it (CPUs, recent GPUs), else float16."""
    import torch

    if dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


@_doc
def embed_histology(
    data: AnnData | SpatialData,
    *,
    encoder: str | Any = K.DEFAULT_ENCODER,
    weights: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    tile_size_um: float = 112.0,
    mpp: float | Mapping[str, float] | None = None,
    spot_diameter_um: float | None = None,
    image_key: str | Mapping[str, str] | None = None,
    section_key: str = K.SECTION_KEY,
    table_key: str | None = None,
    transform: Callable | None = None,
    input_size: int | None = None,
    batch_size: int = 64,
    device: str = "auto",
    key_added: str | None = None,
    overwrite: bool = False,
    num_workers: int = 0,
    amp: bool | None = None,
    copy: bool = False,
) -> AnnData | SpatialData | None:
    """Embed the H&E tile under every spot with a frozen histology encoder.

    For each spot a square tile of ``tile_size_um`` micrometres centred on the spot is read lazily from the
    pyramid level closest to (not coarser than) the encoder's input resolution, resampled (antialiased
    bilinear) to the encoder's input size, normalised as the encoder expects and embedded in streamed
    batches, so memory does not grow with the number of spots. Parts of a tile outside the image are white.
    Pixel values are read by one rule, decided per image on its coarsest pyramid level before any work and
    logged when it assumes something: uint8 as is, uint16 as 8-bit values if they stay within 0..255 (else the
    full 16-bit range), floats as [0, 1] if they stay within 1 (else as 0..255); NaN, infinite, negative and
    larger values are refused, never clipped (see the "Your data" page, :doc:`/data`).

    The physical scale of each section comes from, in order: ``mpp``; ``uns["sthinge_sections"][S]["mpp"]``;
    the spot diameter in µm (``spot_diameter_um`` or ``uns["sthinge_sections"][S]["spot_diameter_um"]``, 55 µm
    for scanpy's Visium layout) divided by the spots' diameter in pixels (the shapes' radius, or
    ``spot_diameter_fullres``). A section without any of these is refused; a pixel size is never guessed.
    Spot centres are mapped into the image's pixels through spatialdata's coordinate transformations (shapes
    and image must share a coordinate system), so images and shapes need not be aligned pixel for pixel.

    Parameters
    ----------
    data
        SpatialData (images + circles + a table annotating them, e.g. sthinge's layout or what spatialdata-io
        reads from Visium) or AnnData in scanpy's Visium layout (``uns["spatial"][library_id]["images"]`` and
        ``["scalefactors"]``, ``obsm["spatial"]`` in full-resolution pixels).
    encoder
        ``"he-stats"`` (default; hand-crafted colour / stain / texture statistics, no weights, 104-d),
        ``"uni"`` (UNI ViT-L/16, 1024-d), ``"conch"`` (CONCH ViT-B/16 vision tower, 512-d), ``"uni+conch"``
        (concatenation, 1536-d; HINGE's condition), any timm model name, or a ``torch.nn.Module`` mapping
        ``(B, 3, input_size, input_size)`` to ``(B, dim)``.
    weights
        Local weight file (UNI / CONCH: the published ``pytorch_model.bin``; ``.safetensors`` also read);
        ``{"uni": path, "conch": path}`` for ``"uni+conch"``; for a timm model a file or ``"random"``.
    tile_size_um
        Side of the tile in micrometres (112 µm = 224 px at UNI's 0.5 µm/px).
    mpp
        Micrometres per pixel of the spot coordinates (``obsm["spatial"]`` / the shapes; full-resolution
        pixels for Visium), a number or ``{section: number}``.
    spot_diameter_um
        Spot diameter in µm, used to derive the scale when no ``mpp`` is known.
    image_key
        Image to read (SpatialData: element name, or ``{section: name}``; AnnData Visium: ``"hires"`` or
        ``"lowres"``). Default: ``uns["sthinge_sections"][S]["image"]``, else the highest-resolution image
        sharing a coordinate system with the section's shapes (AnnData: ``"hires"``).
    section_key
        obs column naming the section of each spot (for AnnData: the library id in ``uns["spatial"]``).
    %(table_key)s
    transform
        For a user module: maps float tiles in [0, 1] to the module's input (default ImageNet normalisation).
    input_size
        For a user module: tile size in pixels fed to it (default 224).
    batch_size
        Tiles per batch.
    %(device)s
    key_added
        obsm key written; default ``f"X_{encoder}"`` (e.g. ``"X_he-stats"``, ``"X_uni+conch"``). Never
        ``"spatial"`` (the coordinates).
    overwrite
        Replace an existing ``obsm[key_added]``; without it, an existing embedding of that name is an error
        (raised before any work). Not needed with ``copy=True``.
    num_workers
        Background threads reading tiles ahead of the encoder (0 = read in the main thread).
    amp
        Run the encoder in mixed precision (``torch.autocast``: bfloat16 where the device supports it, else
        float16 on a GPU). Default: on a GPU for neural encoders (UNI, CONCH, timm, your module), off on a CPU.
        ``he-stats`` always computes in float32. Recorded in ``uns[key_added]["amp"]``.
    %(copy)s

    Returns
    -------
    ``None``; with ``copy=True`` the modified copy of ``data`` (a SpatialData for a SpatialData). Writes, into the
    table:

    - ``obsm[key_added]``: float32 ``(n_spots, dim)`` embeddings;
    - ``uns[key_added]``: the settings — ``encoder``, ``weights``, ``dim``, ``tile_size_um``, ``input_size``,
      ``mean``/``std``, per-section ``mpp``, ``mpp_source``, ``image``, ``value_range`` (how the image's
      values were read, e.g. ``"0-255 (float)"``), pyramid ``level``, ``amp`` (the autocast dtype or None), and for
      ``he-stats`` the ``feature_names``.

    Examples
    --------
    >>> import sthinge as st
    >>> sdata = st.datasets.synthetic(n_sections=1, n_spots=16, n_genes=10)
    >>> st.pp.embed_histology(sdata)
    >>> sdata.tables["table"].obsm["X_he-stats"].shape
    (16, 104)
    """
    import torch

    from sthinge._settings import settings
    from sthinge.pp import _tiles

    # ---- arguments (all checked before any work or write)
    if isinstance(encoder, torch.nn.Module):
        name = type(encoder).__name__
        if input_size is not None:
            input_size = _check_int("input_size", input_size, low=8, high=4096)
        if transform is not None and not callable(transform):
            raise TypeError("`transform` must be callable or None.")
    elif isinstance(encoder, str):
        name = encoder
        if transform is not None or input_size is not None:
            raise ValueError("`transform` and `input_size` apply only to a user `torch.nn.Module` encoder.")
        if encoder not in E.BUILTIN:
            import timm

            if not timm.list_models(encoder):
                raise ValueError(
                    f"Unknown `encoder` {encoder!r}: expected one of {list(E.BUILTIN)}, a timm model "
                    "name or a torch.nn.Module."
                )
        _check_weights(encoder, weights)
    else:
        raise TypeError(f"`encoder` must be a string or a torch.nn.Module, got {type(encoder).__name__}.")
    tile_size_um = _check_float("tile_size_um", tile_size_um, low=0.0, low_open=True)
    batch_size = _check_int("batch_size", batch_size, low=1)
    num_workers = _check_int("num_workers", num_workers, low=0, high=64)
    if mpp is not None and not isinstance(mpp, Mapping):
        _check_float("mpp", mpp, low=0.0, low_open=True)
    if spot_diameter_um is not None:
        spot_diameter_um = _check_float("spot_diameter_um", spot_diameter_um, low=0.0, low_open=True)
    if image_key is not None and not isinstance(image_key, str | Mapping):
        raise TypeError(f"`image_key` must be a string, a dict or None, got {type(image_key).__name__}.")
    key_added = _check_key("key_added", key_added, optional=True) or K.embedding_key(name)
    dev = settings.resolve_device(device)
    if amp is not None:
        amp = _check_bool("amp", amp)

    source, table, copied = _table_for(data, table_key, copy)
    if key_added == K.SPATIAL_KEY:
        raise ValueError(
            f"`key_added` {key_added!r} names the spot coordinates `obsm['spatial']`; they are never "
            "replaced. Choose another name."
        )
    labels = _section_labels(source, section_key)
    if _is_spatialdata(data):
        groups = _tiles.groups_from_spatialdata(
            data, source, labels, image_key=image_key, mpp=mpp, spot_diameter_um=spot_diameter_um
        )
    else:
        groups = _tiles.groups_from_anndata(
            source, labels, image_key=image_key, mpp=mpp, spot_diameter_um=spot_diameter_um
        )
    encoders = _build_encoders(encoder, weights, input_size=input_size, transform=transform)
    if not copy:  # after the argument checks, before any tile is read
        _check_overwrite(f"`key_added` {key_added!r}: `obsm[{key_added!r}]`", key_added in source.obsm, overwrite)
    for enc in encoders:
        enc.module.to(dev)
    amp_dtype = _autocast_dtype(dev) if (amp if amp is not None else dev.type == "cuda") else None
    window = tile_size_um * encoders[0].window_factor
    read_size = max(enc.input_size for enc in encoders)
    dim = sum(enc.dim for enc in encoders)

    # ---- embed in streamed batches
    out = np.zeros((source.n_obs, dim), dtype=np.float32)
    n_batches = sum(-(-len(g.rows) // batch_size) for g in groups)
    levels = {}
    bar = progress(range(n_batches), desc=f"embedding ({name})", total=n_batches)
    it = iter(bar)
    with torch.inference_mode():
        for g in groups:
            level = _tiles.choose_level(g.image, window / g.mpp, read_size)
            levels[g.section] = level
            up = read_size / (window / g.mpp / max(g.image.factors[level]))
            if up > 2.0:
                logg.warning(
                    f"section {g.section!r}: tiles are upsampled {up:.1f}x (image resolution is coarser "
                    "than the encoder's input); consider a higher-resolution image."
                )
            for rows, crops in _tiles.iter_crops(g, window, read_size, batch_size, num_workers):
                feats = []
                for enc in encoders:
                    x = _tiles.resample(crops, enc.input_size, dev)  # (B, 3, S, S) in [0, 1]
                    if amp_dtype is not None and enc.name != "he-stats":
                        with torch.autocast(device_type=dev.type, dtype=amp_dtype):
                            f = enc.module(enc.prepare(x))
                    else:
                        f = enc.module(enc.prepare(x))
                    if f.ndim != 2 or f.shape[1] != enc.dim:
                        raise RuntimeError(f"encoder {enc.name!r} returned {tuple(f.shape)}, expected (B, {enc.dim}).")
                    feats.append(f.float().cpu().numpy())
                out[rows] = np.concatenate(feats, axis=1)
                next(it, None)
    if hasattr(bar, "close"):
        bar.close()
    if not np.isfinite(out).all():
        raise RuntimeError(f"The {name} encoder produced non-finite features; nothing was written.")

    # ---- write
    table.obsm[key_added] = out
    settings_out = {
        "encoder": name,
        "weights": (
            {k: str(v) for k, v in weights.items()}
            if isinstance(weights, Mapping)
            else (None if weights is None else str(weights))
        ),
        "dim": int(dim),
        "dims": [int(e.dim) for e in encoders],
        "tile_size_um": float(tile_size_um),
        "window_um": float(window),
        "input_size": [int(e.input_size) for e in encoders],
        "mean": [list(e.mean) if e.mean is not None else [] for e in encoders],
        "std": [list(e.std) if e.std is not None else [] for e in encoders],
        "mpp": {g.section: float(g.mpp) for g in groups},
        "mpp_source": {g.section: g.mpp_source for g in groups},
        "image": {g.section: g.image.name for g in groups},
        "value_range": {g.section: g.image.value_range.label for g in groups},
        "level": {s: int(v) for s, v in levels.items()},
        "amp": None if amp_dtype is None else str(amp_dtype).replace("torch.", ""),
    }
    if settings_out["weights"] is None:
        del settings_out["weights"]
    if encoders[0].feature_names is not None:
        settings_out["feature_names"] = list(encoders[0].feature_names)
    table.uns[key_added] = settings_out
    logg.info(f"embed_histology: wrote obsm[{key_added!r}] ({source.n_obs} x {dim}).")
    return copied
