"""Checkpoint input/output: MindSpore ``.ckpt`` files without MindSpore, safe PyTorch loading, CellFM backbones.

``import sthinge.io`` itself imports only numpy; torch is imported by the functions that need it.
"""

from __future__ import annotations

from sthinge.io._atomic import atomic_write
from sthinge.io._cellfm import load_cellfm, save_cellfm
from sthinge.io._mindspore import inspect_mindspore_ckpt, read_mindspore_ckpt, write_mindspore_ckpt
from sthinge.io._torch import atomic_save, safe_torch_load

__all__ = [
    "atomic_save",
    "atomic_write",
    "inspect_mindspore_ckpt",
    "load_cellfm",
    "read_mindspore_ckpt",
    "safe_torch_load",
    "save_cellfm",
    "write_mindspore_ckpt",
]
