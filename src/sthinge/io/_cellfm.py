"""Loading and saving CellFM backbones (see Method, :ref:`method-backbone` and :ref:`method-numerics`).

Three kinds of file are read by :func:`load_cellfm`:

* a PyTorch state dict in the names of the official PyTorch port (``.pt``/``.pth``; bare, or wrapped as
  ``{"state_dict": ...}`` / ``{"model": ...}``);
* a MindSpore ``.ckpt`` file of the original CellFM (LayerNorm ``gamma``/``beta`` are renamed to
  ``weight``/``bias``; optimizer moments and step/learning-rate entries are dropped);
* sthinge's own backbone files written by :func:`save_cellfm`, which also record the configuration.

sthinge backbone format (version 1): one self-describing file holding the weights in CellFM names and the
:class:`~sthinge.models.cellfm.CellFMConfig` as a JSON-compatible dict with the extra keys
``"format": "sthinge-cellfm"`` and ``"format_version": 1``:

* ``"pt"``: ``torch.save({"format": "sthinge-cellfm", "format_version": 1, "config": {...},
  "state_dict": {port name: tensor}})`` (readable with ``weights_only=True``);
* ``"ckpt"``: a MindSpore checkpoint with MindSpore names (``post_norm*.gamma``/``.beta``) plus one entry
  ``"sthinge_config"`` of MindSpore type ``str`` holding the config as JSON (written last);
* ``"safetensors"``: the port-named tensors, with ``{"format", "format_version", "config" (JSON)}`` in the
  header metadata (needs the optional ``safetensors`` package).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge._logging import logg
from sthinge._state_dict import compare_state_dict, listing
from sthinge.io._atomic import atomic_write
from sthinge.io._mindspore import read_mindspore_ckpt, write_mindspore_ckpt
from sthinge.io._torch import atomic_save, safe_torch_load

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from sthinge.models.cellfm import CellFM, CellFMConfig

__all__ = ["load_cellfm", "save_cellfm"]

FORMAT_NAME = "sthinge-cellfm"
FORMAT_VERSION = 1
CONFIG_TAG = "sthinge_config"
DEFAULT_N_HEADS = 48
"""CellFM's head count (both published sizes); no checkpoint stores it."""

#: ``gene_emb`` rows -> vocabulary size (V + 1 rows rounded up to a multiple of 8; 24,078 genes: 800M, 27,855: 80M).
VOCAB_OF_ROWS = {24_080: 24_078, 27_856: 27_855}

#: Non-model entries of MindSpore training checkpoints (exact names).
_META_TAGS = frozenset(
    {
        "global_step",
        "learning_rate",
        "beta1_power",
        "beta2_power",
        "current_iterator_step",
        "last_overflow_iterator_step",
        "epoch_num",
        "step_num",
        "loss_scale",
        "scale_sense",
        "momentum",
        "weight_decay",
        CONFIG_TAG,
    }
)
#: Prefixes of optimizer-state entries (Adam/AdamWeightDecay/LAMB moments, gradient accumulators).
_OPTIMIZER_PREFIXES = (
    "moment1.",
    "moment2.",
    "moment3.",
    "adam_",
    "accu_",
    "accum.",
    "accumulation.",
    "mean_grad.",
    "mean_square.",
)
_LAYER = re.compile(r"^encoder\.(\d+)\.")
#: Files with at least this many weights are loaded into a module built on the meta device (no double allocation).
_META_MIN_NUMEL = 20_000_000
_WRAPPERS = ("state_dict", "model", "model_state_dict", "net", "network")


def _is_training_state(tag: str) -> bool:
    """Whether a checkpoint entry is optimizer or training metadata rather than a model weight."""
    return tag in _META_TAGS or tag.startswith(_OPTIMIZER_PREFIXES)


def _ms_to_port(tag: str) -> str:
    """MindSpore LayerNorm names ``*.gamma``/``*.beta`` -> PyTorch ``*.weight``/``*.bias``."""
    if tag.endswith(".gamma"):
        return tag[: -len("gamma")] + "weight"
    if tag.endswith(".beta"):
        return tag[: -len("beta")] + "bias"
    return tag


def _port_to_ms(name: str, layernorms: set[str]) -> str:
    """Inverse of :func:`_ms_to_port` for the LayerNorm parameters of the model."""
    module, _, leaf = name.rpartition(".")
    if module in layernorms and leaf in ("weight", "bias"):
        return f"{module}.{'gamma' if leaf == 'weight' else 'beta'}"
    return name


# ---------------------------------------------------------------------------------------------------------------------
# reading files into (state dict, recorded config)


def _sniff(path: Path) -> str:
    """Guess the container format from the first bytes (falls back to the suffix)."""
    with open(path, "rb") as fh:
        head = fh.read(16)
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80":
        return "torch"
    if head[:1] == b"\x0a":
        return "ckpt"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth", ".bin"):
        return "torch"
    if suffix == ".ckpt":
        return "ckpt"
    if suffix == ".safetensors":
        return "safetensors"
    raise ValueError(
        f"{str(path)!r} is neither a PyTorch file, a MindSpore .ckpt nor a safetensors file (first bytes "
        f"{head[:8].hex(' ')})."
    )


def _parse_config(raw: Any, source: str) -> dict[str, Any]:
    """Validate a recorded sthinge config (a dict or a JSON string); return the CellFMConfig fields."""
    if isinstance(raw, str | np.ndarray):
        try:
            raw = json.loads(str(raw[()] if isinstance(raw, np.ndarray) else raw))
        except json.JSONDecodeError as err:
            raise ValueError(f"{source}: the recorded sthinge config is not valid JSON ({err}).") from None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{source}: the recorded sthinge config is not a dict (got {type(raw).__name__}).")
    raw = dict(raw)
    fmt = raw.pop("format", FORMAT_NAME)
    version = raw.pop("format_version", FORMAT_VERSION)
    if fmt != FORMAT_NAME:
        raise ValueError(f"{source}: unknown backbone format {fmt!r} (expected {FORMAT_NAME!r}).")
    if int(version) > FORMAT_VERSION:
        raise ValueError(
            f"{source}: backbone format version {version} is newer than this sthinge understands "
            f"({FORMAT_VERSION}); upgrade sthinge."
        )
    return raw


def _torch_state(obj: Any, source: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Find the state dict (and a sthinge config) in an object read from a PyTorch file."""
    import torch

    if isinstance(obj, Mapping) and obj.get("format") == FORMAT_NAME:
        if not isinstance(obj.get("state_dict"), Mapping) or not isinstance(obj.get("config"), Mapping):
            raise ValueError(f"{source}: sthinge backbone file without a 'state_dict' and a 'config' dict.")
        config = _parse_config(
            {**obj["config"], "format": obj["format"], "format_version": obj.get("format_version", FORMAT_VERSION)},
            source,
        )
        return dict(obj["state_dict"]), config
    if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
        else:
            raise ValueError(
                f"{source}: no state dict found (top-level keys {listing([str(k) for k in obj])}; expected tensors "
                f"or one of {list(_WRAPPERS)})."
            )
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source}: expected a state dict, got {type(obj).__name__}.")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    others = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        logg.warning(f"{source}: ignoring non-tensor entries {listing(others)}.")
    if state and all(k.startswith("module.") for k in state):  # saved from DataParallel/DDP
        state = {k[len("module.") :]: v for k, v in state.items()}
    return state, None


def _read_state(path: Path) -> tuple[dict[str, Any], dict[str, Any] | None, str]:
    """Read ``path`` into ``(state dict in port names, recorded config or None, kind)``."""
    import torch

    source = repr(str(path))
    kind = _sniff(path)
    if kind == "torch":
        state, config = _torch_state(safe_torch_load(path), source)
    elif kind == "ckpt":
        arrays = read_mindspore_ckpt(path, keys=lambda tag: tag == CONFIG_TAG or not _is_training_state(tag))
        config = _parse_config(arrays.pop(CONFIG_TAG), source) if CONFIG_TAG in arrays else None
        state = {}
        for tag, array in arrays.items():
            if array.dtype.kind not in "fiub":
                raise ValueError(f"{source}: entry {tag!r} is not a numeric tensor ({array.dtype}).")
            state[_ms_to_port(tag)] = torch.from_numpy(array)
    else:
        try:
            from safetensors import SafetensorError
            from safetensors.torch import load_file
        except ImportError as err:  # pragma: no cover - optional dependency
            raise ImportError(f"Reading {source} needs the optional 'safetensors' package.") from err
        try:
            state = load_file(str(path), device="cpu")
            with open(path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                metadata = json.loads(fh.read(header_len)).get("__metadata__") or {}
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"{source} is truncated or not a valid safetensors file ({err}).") from err
        config = None
        if metadata.get("format") == FORMAT_NAME:
            config = _parse_config(
                {
                    **json.loads(metadata.get("config", "{}")),
                    "format": FORMAT_NAME,
                    "format_version": metadata.get("format_version", FORMAT_VERSION),
                },
                source,
            )
    dropped = [k for k in state if _is_training_state(k)]
    for k in dropped:
        del state[k]
    return state, config, kind


# ---------------------------------------------------------------------------------------------------------------------
# configuration


def _not_cellfm_hint(state: Mapping[str, Any]) -> str:
    if any(k.startswith(("retentionblocks.", "final_layer.", "cond_embed.")) for k in state):
        return " It looks like an official HINGE checkpoint (retentionblocks.*), not a CellFM backbone."
    return ""


def _infer_dims(state: Mapping[str, Any], source: str) -> dict[str, Any]:
    """Architecture facts visible in the tensors: layers, width, embedding rows, bins, S-T tokens."""
    gene_emb = state.get("gene_emb")
    if gene_emb is None:
        raise ValueError(
            f"{source}: no 'gene_emb' tensor, so this is not a CellFM checkpoint (keys {listing(list(state))})."
            + _not_cellfm_hint(state)
        )
    if gene_emb.ndim != 2:
        raise ValueError(f"{source}: 'gene_emb' must be 2-d (rows, width), got shape {list(gene_emb.shape)}.")
    layers = sorted({int(m.group(1)) for k in state if (m := _LAYER.match(k))})
    if not layers:
        raise ValueError(f"{source}: no 'encoder.{{i}}.*' tensors: a CellFM checkpoint needs at least one layer.")
    n_layers = layers[-1] + 1
    absent = sorted(set(range(n_layers)) - set(layers))
    if absent:
        raise ValueError(
            f"{source}: encoder layers {absent[:5]} are missing (the file has layers up to {n_layers - 1})."
        )
    w3 = state.get("value_enc.value_enc.w3.weight")
    return {
        "n_layers": n_layers,
        "d_model": int(gene_emb.shape[1]),
        "rows": int(gene_emb.shape[0]),
        "n_bins": int(w3.shape[0]) if w3 is not None and w3.ndim == 2 else 256,
        "st_tokens": "ST_emb" in state,
    }


def _vocab_from_rows(rows: int, source: str) -> int:
    if rows not in VOCAB_OF_ROWS:
        raise ValueError(
            f"{source}: 'gene_emb' has {rows:,} rows, which matches no CellFM vocabulary: the 800M weights have "
            "24,080 rows (24,078-gene list) and the 80M weights 27,856 rows (27,855-gene list). Refusing to guess "
            "which gene each row belongs to."
        )
    return VOCAB_OF_ROWS[rows]


def _n_rows(vocab_size: int) -> int:
    n = vocab_size + 1
    return n + (-n) % 8


def _build_config(
    state: Mapping[str, Any],
    recorded: dict[str, Any] | None,
    *,
    preset: str | None,
    n_heads: int | None,
    numerics: str | None,
    source: str,
) -> CellFMConfig:
    from sthinge.models.cellfm import NUMERICS, PRESETS, CellFMConfig

    dims = _infer_dims(state, source)
    fields = {f.name for f in dataclasses.fields(CellFMConfig)}
    if recorded is not None:
        unknown = sorted(set(recorded) - fields)
        if unknown:
            raise ValueError(f"{source}: the recorded config has fields this sthinge does not know: {unknown}.")
        needed = {"n_layers", "d_model", "n_heads", "vocab_size"} - set(recorded)
        if needed:
            raise ValueError(f"{source}: the recorded config lacks {sorted(needed)}.")
        vocab_size = int(recorded["vocab_size"])
    else:
        vocab_size = _vocab_from_rows(dims["rows"], source)

    if preset is not None:
        if preset not in PRESETS:
            raise ValueError(f"Unknown preset {preset!r}; expected one of {sorted(PRESETS)}.")
        want = PRESETS[preset]
        found = {
            "layers": (dims["n_layers"], want.n_layers),
            "width": (dims["d_model"], want.d_model),
            "vocabulary": (vocab_size, want.vocab_size),
            "S-T tokens": (dims["st_tokens"], want.st_tokens),
            "value bins": (dims["n_bins"], want.n_bins),
        }
        diffs = [f"{what} {got} (file) vs {exp} (preset)" for what, (got, exp) in found.items() if got != exp]
        if diffs:
            raise ValueError(f"{source} does not match preset {preset!r}: " + "; ".join(diffs) + ".")
        base = dataclasses.asdict(want)
    elif recorded is not None:
        base = dict(recorded)
    else:
        match = [
            name
            for name, p in PRESETS.items()
            if name != "tiny"
            and (p.n_layers, p.d_model, p.vocab_size, p.st_tokens)
            == (dims["n_layers"], dims["d_model"], vocab_size, dims["st_tokens"])
        ]
        base = {
            **dataclasses.asdict(CellFMConfig()),
            "n_heads": DEFAULT_N_HEADS,
            "name": match[0] if match else f"cellfm-{dims['n_layers']}x{dims['d_model']}",
            **NUMERICS["cellfm"],
        }
    if recorded is None or preset is not None:
        base.update(
            n_layers=dims["n_layers"],
            d_model=dims["d_model"],
            vocab_size=vocab_size,
            n_bins=dims["n_bins"],
            st_tokens=dims["st_tokens"],
        )
    if n_heads is not None:
        base["n_heads"] = n_heads
    if numerics is not None:
        if numerics not in NUMERICS:
            raise ValueError(f"`numerics` must be one of {sorted(NUMERICS)}, got {numerics!r}.")
        base.update(NUMERICS[numerics])
    if base["d_model"] % base["n_heads"]:
        raise ValueError(
            f"{source}: width {base['d_model']} is not divisible by {base['n_heads']} heads"
            + (" (CellFM's head count, the default; checkpoints do not store it)" if n_heads is None else "")
            + ". Pass `n_heads=` or a matching `preset=`."
        )
    return CellFMConfig(**base)


def _check_keys(state: Mapping[str, Any], expected: Mapping[str, Any], source: str, strict: bool) -> list[str]:
    """Compare the file's tensors with the model's; return the missing keys (only non-empty if not strict)."""
    report = compare_state_dict(expected, state)
    problems = report.key_problems()
    if problems and strict:
        raise ValueError(
            f"{source} does not fit the CellFM module: " + "; ".join(problems) + "." + _not_cellfm_hint(state)
        )
    if problems:
        logg.warning(
            f"{source}: " + "; ".join(problems) + " (strict=False: missing tensors keep their random init, "
            "unexpected ones are ignored)."
        )
    if report.wrong_shape:
        raise ValueError(f"{source}: {report.shape_problem()}.")
    return report.missing


# ---------------------------------------------------------------------------------------------------------------------
# public API


def load_cellfm(
    path: str | os.PathLike[str],
    *,
    preset: str | None = None,
    n_heads: int | None = None,
    strict: bool = True,
    dtype: torch.dtype | None = None,
    numerics: str | None = None,
) -> CellFM:
    """Load CellFM weights into a :class:`~sthinge.models.cellfm.CellFM` module.

    Parameters
    ----------
    path
        A PyTorch state dict in the PyTorch port's names (``.pt``/``.pth``, bare or wrapped as
        ``{"state_dict": ...}``/``{"model": ...}``), an original MindSpore ``.ckpt`` file (read without
        MindSpore; LayerNorm ``gamma``/``beta`` become ``weight``/``bias``; optimizer moments ``moment1.*``,
        ``moment2.*``, ``adam_*``, ``accu_*`` and the entries ``global_step``, ``learning_rate``,
        ``beta1_power``, ``beta2_power``, ``current_iterator_step``, ``last_overflow_iterator_step`` are
        dropped), or a sthinge backbone file written by :func:`save_cellfm`. The container is recognised from
        its first bytes.
    preset
        ``"tiny"``, ``"cellfm-80m"`` or ``"cellfm-800m"``: refuse a file whose layers, width, vocabulary, S-T
        tokens or value bins differ from the preset (the message names what differs); the preset also supplies
        the head count and numerics.
    n_heads
        Number of attention heads. No checkpoint stores it; the default is the preset's, else the recorded
        value of a sthinge file, else **48**, CellFM's value for both published sizes.
    strict
        Require the file's tensors to match the module's exactly. With ``strict=False`` missing tensors keep
        their random initialisation and unexpected ones are ignored (both with a warning). Shape mismatches are
        always errors.
    dtype
        Parameter dtype of the returned module; default ``torch.float32``. Half-precision files are cast.
    numerics
        Numerics profile (``"cellfm"``: LeakyReLU slope 0.2, LayerNorm eps 1e-7; ``"hinge-official"``: 0.01,
        1e-6). Default: ``"cellfm"`` for CellFM files, the recorded values for sthinge files, the preset's when
        ``preset`` is given.

    Returns
    -------
    CellFM
        The module, on the CPU, in eval mode (parameters keep ``requires_grad=True``; freeze them as needed).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is truncated or corrupt; if it is not a CellFM checkpoint; if ``gene_emb`` has a number of
        rows other than 24,080 (24,078-gene vocabulary) or 27,856 (27,855-gene vocabulary) and the file does
        not record its vocabulary; if it does not match ``preset``; if keys are missing or unexpected (listing
        the first few and the count); or if tensors have the wrong shape.

    Notes
    -----
    The number of layers is inferred from the ``encoder.{i}`` keys, the width from ``gene_emb``, the value bins
    from ``value_enc.value_enc.w3.weight`` and the S-T read-depth tokens from the presence of ``ST_emb``.
    """
    import torch

    from sthinge.models.cellfm import CellFM

    path = Path(os.fspath(path))
    source = repr(str(path))
    if not path.exists():
        raise FileNotFoundError(f"CellFM checkpoint {source} does not exist.")
    if path.is_dir():
        raise IsADirectoryError(f"{source} is a directory; pass the checkpoint file inside it.")
    state, recorded, _ = _read_state(path)
    config = _build_config(state, recorded, preset=preset, n_heads=n_heads, numerics=numerics, source=source)
    if dtype is None:
        dtype = torch.float32
    if sum(v.numel() for v in state.values()) >= _META_MIN_NUMEL:
        with torch.device("meta"):  # no allocation or random init for a module whose weights come from the file
            model = CellFM(config)
    else:  # small models: plain construction is cheaper than torch's one-off meta-device set-up (~2 s)
        model = CellFM(config)
    expected = model.state_dict()
    missing = _check_keys(state, expected, source, strict)
    state = {k: torch.as_tensor(v).to(dtype=dtype) for k, v in state.items() if k in expected}
    if missing:  # strict=False: real (randomly initialised) tensors for what the file lacks
        if any(p.is_meta for p in model.parameters()):
            model = CellFM(config)
        model = model.to(dtype)
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def _format_of(path: Path, format: str | None) -> str:
    if format is None:
        suffix = path.suffix.lower()
        format = {".ckpt": "ckpt", ".safetensors": "safetensors"}.get(suffix, "pt")
    if format not in ("pt", "ckpt", "safetensors"):
        raise ValueError(f"`format` must be 'pt', 'ckpt' or 'safetensors', got {format!r}.")
    return format


def save_cellfm(
    model: CellFM, path: str | os.PathLike[str], *, format: str | None = None, overwrite: bool = False
) -> Path:
    """Save a CellFM backbone with its configuration, so that :func:`load_cellfm` reloads it without arguments.

    Parameters
    ----------
    model
        The module to save.
    path
        Destination file (written atomically; its directory must exist).
    format
        ``"pt"`` (``torch.save`` of ``{"format": "sthinge-cellfm", "format_version": 1, "config": {...},
        "state_dict": {...}}`` in the PyTorch port's names), ``"ckpt"`` (a MindSpore checkpoint in MindSpore's
        names, ``gamma``/``beta`` for LayerNorms, with the config as JSON in a ``str`` entry
        ``"sthinge_config"``; MindSpore itself can read the weights) or ``"safetensors"`` (config in the header
        metadata; needs the optional ``safetensors`` package). Default: from the suffix (``.ckpt``,
        ``.safetensors``), else ``"pt"``.
    overwrite
        Whether an existing file at ``path`` may be replaced (an existing folder never is).

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    FileExistsError
        If ``path`` exists and ``overwrite`` is False, or if it is a folder.
    """
    import torch

    from sthinge._utils import _check_output_path

    path = _check_output_path("path", path, overwrite=overwrite, kind="file")
    format = _format_of(path, format)
    config = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **dataclasses.asdict(model.config)}
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if format == "pt":
        atomic_save(
            {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "config": dataclasses.asdict(model.config),
                "state_dict": state,
            },
            path,
        )
    elif format == "ckpt":
        layernorms = {name for name, m in model.named_modules() if isinstance(m, torch.nn.LayerNorm)}
        tensors: dict[str, Any] = {_port_to_ms(k, layernorms): v for k, v in state.items()}
        tensors[CONFIG_TAG] = json.dumps(config)
        write_mindspore_ckpt(path, tensors, overwrite=overwrite)
    else:
        try:
            from safetensors.torch import save_file
        except ImportError as err:  # pragma: no cover - optional dependency
            raise ImportError("format='safetensors' needs the optional 'safetensors' package.") from err
        metadata = {
            "format": FORMAT_NAME,
            "format_version": str(FORMAT_VERSION),
            "config": json.dumps(dataclasses.asdict(model.config)),
        }
        with atomic_write(path) as tmp:
            save_file({k: v.clone() for k, v in state.items()}, str(tmp), metadata=metadata)
    return path
