"""``sthinge fit CONFIG.toml``: train a model without a notebook, from a TOML file (for HPC batch jobs).

The file has up to five tables; only ``[data]`` is required::

    [data]
    zarr = ["sample1.zarr", "sample2.zarr"]       # SpatialData stores (spatialdata.read_zarr), concatenated
    # hest = { path = "hest_data/", samples = ["TENX95", "TENX99"] }   # or HEST-1k samples (io.read_hest)
    # her2st = ["C3", "C4", "C5", "C6"]                                # or Her2ST sections
    table_key = "table"                          # the table with the counts (default: the only one)

    [panel]                                       # pp.select_genes
    n_top = 300

    [embedding]                                   # pp.embed_histology
    encoder = "he-stats"
    tile_size_um = 112

    [backbone]                                    # tl.fit's backbone= and weights=
    name = "default"

    [fit]                                         # any other keyword of tl.fit
    max_epochs = 30
    train_sections = ["C3", "C4", "C5"]

Relative paths are relative to the config file. The model is saved to ``--out`` with the training history
(``history.csv``) and a copy of the config; Lightning's checkpoints go to ``--out/checkpoints``, from which
``--resume`` continues an interrupted run.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_TABLES = {
    "data": {"zarr", "hest", "her2st", "table_key"},
    "panel": None,  # keywords of pp.select_genes
    "embedding": None,  # keywords of pp.embed_histology
    "backbone": {"name", "weights"},
    "fit": None,  # keywords of tl.fit
}
_RESERVED_FIT = {"backbone", "weights", "checkpoint_dir", "resume", "overwrite", "table_key", "embedding_key"}


def _keywords(func) -> set[str]:
    import inspect

    return {
        name
        for name, p in inspect.signature(func).parameters.items()
        if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and name != "data"
    }


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a ``sthinge fit`` config: unknown tables or keys, and data that do not exist, are errors."""
    import tomllib

    from sthinge import pp, tl

    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"`config` {str(path)!r} is not a file.")
    try:
        config = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"`config` {str(path)!r} is not valid TOML: {err}") from None
    unknown = sorted(set(config) - set(_TABLES))
    if unknown:
        raise ValueError(f"Unknown table(s) {unknown} in {str(path)!r}; allowed: {sorted(_TABLES)}.")
    allowed = {
        **_TABLES,
        "panel": _keywords(pp.select_genes) - {"copy", "table_key"},
        "embedding": _keywords(pp.embed_histology) - {"copy", "table_key", "key_added"},
        "fit": _keywords(tl.fit) - _RESERVED_FIT,
    }
    for table, keys in allowed.items():
        section = config.get(table, {})
        if not isinstance(section, dict):
            raise ValueError(f"[{table}] in {str(path)!r} must be a table.")
        bad = sorted(set(section) - keys)
        if bad:
            raise ValueError(f"Unknown key(s) {bad} in [{table}] of {str(path)!r}; allowed: {sorted(keys)}.")
    data = config.get("data")
    if not data:
        raise ValueError(f"{str(path)!r} has no [data] table: say where the training data are.")
    sources = [k for k in ("zarr", "hest", "her2st") if k in data]
    if len(sources) != 1:
        raise ValueError(f"[data] must have exactly one of 'zarr', 'hest', 'her2st'; found {sources or 'none'}.")
    base = path.parent

    def resolve(p: str) -> Path:
        q = Path(p).expanduser()
        return q if q.is_absolute() else base / q

    if "zarr" in data:
        stores = [data["zarr"]] if isinstance(data["zarr"], str) else list(data["zarr"])
        data["zarr"] = [resolve(s) for s in stores]
        missing = [str(s) for s in data["zarr"] if not s.exists()]
        if missing:
            raise FileNotFoundError(f"[data] zarr store(s) not found: {missing[:5]}.")
    if "hest" in data:
        hest = data["hest"]
        if not isinstance(hest, dict) or "path" not in hest:
            raise ValueError("[data] hest must be a table with 'path' (and optionally 'samples').")
        hest["path"] = resolve(hest["path"])
        if not hest["path"].is_dir():
            raise FileNotFoundError(f"[data] hest path {str(hest['path'])!r} is not a folder.")
    for key in ("weights",):
        if key in config.get("backbone", {}):
            config["backbone"][key] = resolve(config["backbone"][key])
    emb = config.get("embedding", {})
    if isinstance(emb.get("weights"), str) and emb["weights"] != "random":
        emb["weights"] = resolve(emb["weights"])
    return config


def _load_data(data: dict):
    import spatialdata as sd

    from sthinge import datasets, io

    if "zarr" in data:
        parts = [sd.read_zarr(p) for p in data["zarr"]]
    elif "hest" in data:
        samples = data["hest"].get("samples") or [None]
        parts = [io.read_hest(data["hest"]["path"], s) for s in samples]
    else:
        return datasets.her2st(list(data["her2st"]))
    if len(parts) == 1:
        return parts[0]
    return sd.concatenate(parts, concatenate_tables=True)


def run_fit_config(config_path, out, *, resume: bool = False, overwrite: bool = False, say=print):
    """What ``sthinge fit`` does: read the config, prepare the data, fit, save the model and its history."""
    import shutil

    import pandas as pd

    from sthinge import _constants as K
    from sthinge import pp, tl
    from sthinge._utils import _atomic_path, _check_output_path

    config = read_config(config_path)
    out = Path(out).expanduser()
    if not resume:
        _check_output_path("out", out, overwrite=overwrite, kind="folder", flag="--overwrite")
    elif not (out / "checkpoints").is_dir():
        raise FileNotFoundError(f"--resume: {str(out / 'checkpoints')!r} holds no checkpoint of an earlier run.")
    data = config["data"]
    sdata = _load_data(data)
    table_key = data.get("table_key")
    say(f"data: {sum(t.n_obs for t in sdata.tables.values())} spots in {len(sdata.tables)} table(s)")
    pp.normalize(sdata, table_key=table_key, overwrite=True)
    panel = dict(config.get("panel", {}))
    fit_kw = dict(config.get("fit", {}))
    if "train_sections" in fit_kw and "train_sections" not in panel:
        panel["train_sections"] = fit_kw["train_sections"]  # the panel from the training sections only
    pp.select_genes(sdata, table_key=table_key, **panel)
    emb = dict(config.get("embedding", {}))
    encoder = emb.get("encoder", K.DEFAULT_ENCODER)
    pp.embed_histology(sdata, table_key=table_key, overwrite=True, **emb)
    backbone = config.get("backbone", {})
    model = tl.fit(
        sdata,
        table_key=table_key,
        backbone=backbone.get("name", "default"),
        weights=backbone.get("weights"),
        embedding_key=K.embedding_key(encoder if isinstance(encoder, str) else "custom"),
        checkpoint_dir=out / "checkpoints",
        resume=resume,
        overwrite=overwrite and not resume,
        **fit_kw,
    )
    model.save(out, overwrite=True)
    with _atomic_path(out / "history.csv") as tmp:
        pd.DataFrame(model.history).to_csv(tmp, index_label="epoch")
    with _atomic_path(out / "config.toml") as tmp:
        shutil.copyfile(config_path, tmp)
    say(f"model: {len(model.genes)} genes, {len(model.history)} epochs; saved to {out}")
    return model
