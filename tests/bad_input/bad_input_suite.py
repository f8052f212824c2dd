"""The machinery of sthinge's bad-input suite (``tests/bad_input/``), shared by its files.

Every file of the suite holds one class of hostile input; each case is a function of the fresh objects in
:class:`Env` returning ``(object, call)``: the object the user passed (AnnData, SpatialData, a file or folder, a
module, ...) and a call that must fail. The object is snapshotted before the call and compared exactly afterwards
(:func:`snapshot` / :func:`assert_unchanged`), so a failed call provably leaves the user's data as it was.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

import sthinge as st
from sthinge import _constants as K

EMB = "X_test"
FIT = dict(
    backbone="tiny",
    embedding_key=EMB,
    batch_size=8,
    lr=1e-3,
    min_epochs=0,
    curriculum_epochs=1,
    val_metric="loss",
    seed=0,
)


# ---------------------------------------------------------------------------------------------------------------
# snapshots: everything a user can see of an object, compared exactly (NaN positions included)
# ---------------------------------------------------------------------------------------------------------------
def _dense(x):
    return x.toarray() if sp.issparse(x) else np.asarray(x)


def _snapshot_anndata(a) -> dict:
    return {
        "shape": a.shape,
        "obs_names": a.obs_names.copy(),
        "var_names": a.var_names.copy(),
        "X": None if a.X is None else copy.deepcopy(a.X),
        "layers": {k: copy.deepcopy(v) for k, v in a.layers.items()},
        "obs": a.obs.copy(deep=True),
        "var": a.var.copy(deep=True),
        "obsm": {k: copy.deepcopy(v) for k, v in a.obsm.items()},
        "varm": {k: copy.deepcopy(v) for k, v in a.varm.items()},
        "obsp": {k: copy.deepcopy(v) for k, v in a.obsp.items()},
        "uns": copy.deepcopy(dict(a.uns)),
    }


def snapshot(obj: Any) -> Any:
    """A deep, comparable copy of what ``obj`` holds."""
    from anndata import AnnData
    from spatialdata import SpatialData

    from sthinge.tl import HingeModel

    if isinstance(obj, AnnData):
        return {"anndata": _snapshot_anndata(obj)}
    if isinstance(obj, SpatialData):
        return {
            "spatialdata": {
                "tables": {k: _snapshot_anndata(v) for k, v in obj.tables.items()},
                "images": sorted(obj.images.keys()),
                "shapes": {k: pd.DataFrame(v.copy()) for k, v in obj.shapes.items()},
                "points": sorted(obj.points.keys()),
                "labels": sorted(obj.labels.keys()),
            }
        }
    if isinstance(obj, Path):
        if obj.is_dir():
            return {
                "dir": {
                    str(p.relative_to(obj)): (p.read_bytes() if p.is_file() else None) for p in sorted(obj.rglob("*"))
                }
            }
        return {"file": obj.read_bytes() if obj.exists() else None}
    if isinstance(obj, HingeModel):
        return {
            "model": {
                "state": snapshot(obj.module),
                "genes": list(obj.genes),
                "history": copy.deepcopy(obj.history),
                "cond_mean": obj.cond_mean.copy(),
                "cond_std": obj.cond_std.copy(),
            }
        }
    if isinstance(obj, torch.nn.Module):
        return {"module": {k: v.detach().clone() for k, v in obj.state_dict().items()}}
    if isinstance(obj, pd.DataFrame):
        return {"frame": obj.copy(deep=True)}
    return {"object": copy.deepcopy(obj)}


def _same(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif sp.issparse(a):
        assert sp.issparse(b) and a.format == b.format and a.dtype == b.dtype and a.shape == b.shape, where
        _same(_dense(a), _dense(b), where)
    elif isinstance(a, pd.DataFrame | pd.Series):
        assert type(a) is type(b), where
        assert a.index.equals(b.index), f"{where}: index"
        if isinstance(a, pd.DataFrame):
            assert list(a.columns) == list(b.columns) and (a.dtypes == b.dtypes).all(), f"{where}: columns"
            for col in a.columns:  # column by column: geometry columns compare by value, floats with NaN positions
                _same(a[col], b[col], f"{where}[{col!r}]")
        else:
            assert a.dtype == b.dtype, where
            if a.dtype.kind in "fc":
                _same(a.to_numpy(), b.to_numpy(), where)
            else:
                assert a.equals(b), where
    elif isinstance(a, pd.Index):
        assert isinstance(b, pd.Index) and a.equals(b) and a.dtype == b.dtype, where
    elif isinstance(a, np.ndarray):
        b = np.asarray(b) if not isinstance(b, np.ndarray) else b
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.dtype.kind in "fc":
            assert np.array_equal(a, b, equal_nan=True), where
        elif a.dtype.kind == "O":
            assert all(_equal_scalar(x, y) for x, y in zip(a.ravel(), b.ravel())), where
        else:
            assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and list(a.keys()) == list(b.keys()), f"{where}: keys {list(a)} vs {list(b)}"
        for k in a:
            _same(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert _equal_scalar(a, b), f"{where}: {a!r} vs {b!r}"


def _equal_scalar(x, y) -> bool:
    if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
        return True
    return type(x) is type(y) and bool(x == y)


def assert_unchanged(before: Any, obj: Any) -> None:
    _same(before, snapshot(obj), "")


# ---------------------------------------------------------------------------------------------------------------
# shared objects
# ---------------------------------------------------------------------------------------------------------------
def _prepared(seed: int = 0):
    from sthinge.pp import normalize, select_genes

    sdata = st.datasets.synthetic(n_sections=2, n_spots=16, n_genes=12, seed=seed)
    normalize(sdata)
    select_genes(sdata, n_top=12, vocab="cellfm-80m")
    table = sdata.tables[K.TABLE_KEY]
    rng = np.random.default_rng(seed)
    table.obsm[EMB] = np.c_[table.obsm["synthetic_factors"], rng.normal(size=(table.n_obs, 3))].astype(np.float32)
    return sdata


def _fresh(sdata):
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(sdata.images),
        shapes={k: v.copy() for k, v in sdata.shapes.items()},
        tables={k: v.copy() for k, v in sdata.tables.items()},
    )


def _visium(image: np.ndarray, spots: np.ndarray):
    """An AnnData in scanpy's Visium layout around ``image`` (y, x, c)."""
    import anndata as ad

    adata = ad.AnnData(np.ones((len(spots), 2), dtype=np.float32))
    adata.obsm["spatial"] = np.asarray(spots, dtype=float)
    adata.uns["spatial"] = {
        "lib": {"images": {"hires": image}, "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 20.0}}
    }
    return adata


@dataclass
class Env:
    sdata: Any  # prepared SpatialData (normalised, panel, embedding), a fresh copy per test
    adata: Any  # its table as an AnnData, a fresh copy
    model: Any  # a trained HingeModel (shared; cases must not change it, which is checked)
    tmp: Path

    @property
    def model_dir(self) -> Path:
        """The model saved in this test's tmp folder (written on first use)."""
        folder = self.tmp / "model"
        return folder if folder.is_dir() else self.model.save(folder)

    def raw(self):
        """A fresh table with raw counts only."""
        a = self.adata.copy()
        for k in list(a.layers):
            del a.layers[k]
        return a

    def visium(self, image=None, spots=((20.0, 20.0), (40.0, 30.0))):
        if image is None:
            image = np.full((64, 64, 3), 200, dtype=np.uint8)
        return _visium(image, np.asarray(spots))


class Registry:
    """The cases of one file of the suite: ``@registry.case(exc, match)`` registers ``fn(env) -> (obj, call)``."""

    def __init__(self) -> None:
        self.cases: list = []

    def case(self, exc: type[BaseException], match: str):
        def register(fn):
            self.cases.append(pytest.param(fn, exc, match, id=fn.__name__))
            return fn

        return register

    def names(self) -> list[str]:
        return [p.id for p in self.cases]


def run_case(env: Env, make, exc: type[BaseException], match: str) -> BaseException:
    """Run one case: the call raises exactly ``exc`` matching ``match``; the object and the model are unchanged."""
    obj, call = make(env)
    before = snapshot(obj)
    model_before = snapshot(env.model)
    with pytest.raises(exc, match=match) as info:
        call()
    assert type(info.value) is exc, f"{type(info.value).__name__}: {info.value}"
    assert_unchanged(before, obj)
    assert_unchanged(model_before, env.model)
    return info.value
