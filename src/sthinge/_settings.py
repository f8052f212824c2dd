"""Package-wide settings (``sthinge.settings``)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_VERBOSITY_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}
_DEVICES = ("auto", "cpu", "cuda", "mps")


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _available_devices() -> str:
    """What this machine offers, in words (for error messages)."""
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    names = ["'cpu'"] + [f"'cuda:{i}'" for i in range(count)] + (["'mps'"] if _mps_available() else [])
    gpu = f"{count} CUDA device(s)" if count else "no CUDA device (no GPU or no driver)"
    return f"it has {gpu}; available: {', '.join(names)} or 'auto'"


@dataclass(frozen=True)
class TrainerSpec:
    """How ``fit`` and ``pretrain_backbone`` run Lightning: checked by :meth:`checked` before any work."""

    name: str  # the public function, named in interruption messages
    max_epochs: int
    max_steps: int | None = None
    accelerator: str = "auto"
    devices: int | str = "auto"
    strategy: str = "auto"
    precision: str | None = None
    gradient_clip_val: float | None = None

    @classmethod
    def checked(
        cls,
        name: str,
        max_epochs: Any,
        max_steps: Any = None,
        accelerator: Any = "auto",
        devices: Any = "auto",
        strategy: Any = "auto",
        precision: Any = None,
        gradient_clip_val: Any = None,
    ) -> TrainerSpec:
        """Check the values (errors name the argument) and return them as a spec, numbers as Python numbers."""
        from sthinge import _constants as K
        from sthinge._utils import _check_choice, _check_float, _check_int

        max_epochs = _check_int("max_epochs", max_epochs, low=1)
        if max_steps is not None:
            max_steps = _check_int("max_steps", max_steps, low=1)
        if gradient_clip_val is not None:
            gradient_clip_val = _check_float("gradient_clip_val", gradient_clip_val, low=0.0, low_open=True)
        _check_choice("precision", precision, K.PRECISIONS)
        check_accelerator(accelerator, devices)
        return cls(name, max_epochs, max_steps, accelerator, devices, strategy, precision, gradient_clip_val)


def check_accelerator(accelerator, devices) -> None:
    """Refuse a Lightning ``accelerator`` / ``devices`` this machine does not have (before any work).

    Lightning's own error comes only when the trainer is built, after data and model are prepared, and names
    neither argument. Other values (Accelerator objects, "tpu", ...) are left to Lightning.
    """
    import numbers

    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if isinstance(accelerator, str):
        kind = accelerator.lower()
        if kind in ("cuda", "gpu") and count == 0 and not (kind == "gpu" and _mps_available()):
            raise ValueError(
                f"`accelerator` {accelerator!r} is not available on this machine: {_available_devices()}"
                " (pass `accelerator='cpu'` or 'auto')."
            )
        if kind == "mps" and not _mps_available():
            raise ValueError(
                f"`accelerator` {accelerator!r} is not available on this machine: {_available_devices()}"
                " (pass `accelerator='cpu'` or 'auto')."
            )
        if kind in ("cuda", "gpu") and count:
            wanted = None
            if isinstance(devices, numbers.Integral) and not isinstance(devices, bool) and devices > 0:
                wanted = int(devices)
            elif (
                isinstance(devices, list | tuple) and devices and all(isinstance(d, numbers.Integral) for d in devices)
            ):
                wanted = max(int(d) for d in devices) + 1
            if wanted is not None and wanted > count:
                raise ValueError(
                    f"`devices` {devices!r} asks for more GPUs than this machine has: {_available_devices()}."
                )


class SthingeSettings:
    """Global settings of sthinge.

    Attributes
    ----------
    verbosity
        0 = errors, 1 = warnings, 2 = info and progress bars (default), 3 = debug.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    datadir
        Where dataset files are looked up. Defaults to the environment variable ``STHINGE_DATA_DIR``.
    cachedir
        Where downloads, pre-trained backbones and other caches are written. Defaults to
        ``STHINGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/sthinge``, else ``~/.cache/sthinge``.
    seed
        Default random seed.
    """

    def __init__(self) -> None:
        self._verbosity = 2
        self._device = "auto"
        self._datadir: Path | None = None
        self._cachedir: Path | None = None
        self._seed = 0

    # verbosity ---------------------------------------------------------------------------------------
    @property
    def verbosity(self) -> int:
        """Verbosity level, 0 (errors only) to 3 (debug)."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value not in _VERBOSITY_LEVELS:
            raise ValueError(f"`verbosity` must be one of {sorted(_VERBOSITY_LEVELS)}, got {value!r}.")
        self._verbosity = value
        logging.getLogger("sthinge").setLevel(_VERBOSITY_LEVELS[value])

    # device ------------------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Default torch device (``"auto"`` picks CUDA, then MPS, then CPU)."""
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if not isinstance(value, str) or value.split(":")[0] not in _DEVICES:
            raise ValueError(f"`device` must be one of {_DEVICES} (optionally 'cuda:N'), got {value!r}.")
        self._device = value

    def resolve_device(self, device: str | None = None):
        """Return a :class:`torch.device` for ``device`` (``None`` = :attr:`device`).

        A device this machine does not have (``"cuda"`` without a GPU, ``"cuda:3"`` with two, ``"mps"`` off Apple
        silicon) is refused with a ``ValueError`` naming ``device`` and what is available, before any work.
        """
        import torch

        name = "device"
        if device is None:
            device, name = self._device, "settings.device"
        if isinstance(device, torch.device):
            device = str(device)
        if not isinstance(device, str) or device.split(":")[0] not in _DEVICES:
            raise ValueError(f"`{name}` must be one of {_DEVICES} (optionally 'cuda:N'), got {device!r}.")
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda")
            if _mps_available():
                return torch.device("mps")
            return torch.device("cpu")
        kind, _, index = device.partition(":")
        if index and (kind != "cuda" or not index.isdigit()):
            raise ValueError(f"`{name}` must be one of {_DEVICES} (optionally 'cuda:N'), got {device!r}.")
        if kind == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if count == 0 or (index and int(index) >= count):
                raise ValueError(f"`{name}` {device!r} is not available on this machine: {_available_devices()}.")
        elif kind == "mps" and not _mps_available():
            raise ValueError(f"`{name}` {device!r} is not available on this machine: {_available_devices()}.")
        return torch.device(device)

    # directories -------------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path | None:
        """Directory holding dataset folders such as ``her2st/`` (env ``STHINGE_DATA_DIR``)."""
        if self._datadir is not None:
            return self._datadir
        env = os.environ.get("STHINGE_DATA_DIR")
        return Path(env).expanduser() if env else None

    @datadir.setter
    def datadir(self, value: str | os.PathLike | None) -> None:
        self._datadir = None if value is None else Path(value).expanduser()

    @property
    def cachedir(self) -> Path:
        """Directory for downloads and caches (created on first use)."""
        if self._cachedir is not None:
            return self._cachedir
        env = os.environ.get("STHINGE_CACHE_DIR")
        if env:
            return Path(env).expanduser()
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        return base / "sthinge"

    @cachedir.setter
    def cachedir(self, value: str | os.PathLike | None) -> None:
        self._cachedir = None if value is None else Path(value).expanduser()

    # seed --------------------------------------------------------------------------------------------
    @property
    def seed(self) -> int:
        """Default random seed."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"`seed` must be a non-negative integer, got {value!r}.")
        self._seed = value

    def __repr__(self) -> str:
        return (
            f"SthingeSettings(verbosity={self.verbosity}, device={self.device!r}, datadir={self.datadir}, "
            f"cachedir={self.cachedir}, seed={self.seed})"
        )


settings = SthingeSettings()
