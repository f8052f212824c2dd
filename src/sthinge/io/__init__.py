"""Input/output: whole-slide images, HEST-1k samples, MindSpore ``.ckpt`` files without MindSpore, safe torch
loading, CellFM and scGPT backbones.

``import sthinge.io`` itself imports only numpy; torch, tiffslide, anndata and spatialdata are imported by the
functions that need them.
"""

from __future__ import annotations

from sthinge.io._atomic import atomic_write
from sthinge.io._cellfm import load_cellfm, save_cellfm
from sthinge.io._hest import read_hest
from sthinge.io._mindspore import inspect_mindspore_ckpt, read_mindspore_ckpt, write_mindspore_ckpt
from sthinge.io._scgpt import load_scgpt, save_scgpt
from sthinge.io._slide import read_slide
from sthinge.io._torch import atomic_save, safe_torch_load

__all__ = [
    "atomic_save",
    "atomic_write",
    "inspect_mindspore_ckpt",
    "load_cellfm",
    "load_scgpt",
    "read_hest",
    "read_mindspore_ckpt",
    "read_slide",
    "safe_torch_load",
    "save_cellfm",
    "save_scgpt",
    "write_mindspore_ckpt",
]
