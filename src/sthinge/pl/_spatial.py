"""``pl.spatial``: truth, prediction and uncertainty maps of genes over the section's H&E."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sthinge import _constants as K
from sthinge._logging import logg
from sthinge._utils import _is_spatialdata, _resolve_table
from sthinge.pl._utils import _as_list, _axes_grid, _figure_output

if TYPE_CHECKING:  # pragma: no cover
    from anndata import AnnData
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

_MAX_SIDE = 1500  # longest side (pixels) of the image level drawn under the spots
_WIDTH_KEY = re.compile(r"^(?P<base>.+)_width(?P<label>\d+(?:\.\d+)?)$")  # "<prediction>_width90"


# ----------------------------------------------------------------------------------------------------------
# values to draw
# ----------------------------------------------------------------------------------------------------------
def _has_prediction(data, key: str) -> bool:
    if _is_spatialdata(data):
        return key in data.tables and key != K.TABLE_KEY
    import pandas as pd

    return isinstance(getattr(data, "obsm", {}).get(key), pd.DataFrame)


def _key_values(
    data, keys: list[str], genes: list[str], *, pred_key: str, truth_layer: str | None, table_key: str | None
):
    """Return ``(source table, {key: (rows, (n, G) values)}, {key: (kind, prediction, transform)})``.

    Rows are positions in the source table; kind is ``"truth"``, ``"mean"``, ``"std"``, ``"error"`` or
    ``"width<L>"`` (the width of the central interval at L %); transform
    is the normalisation of the values (``"log1p_cp10k"``, ``"log2_raw"`` or ``""`` where unknown).
    """
    from sthinge.tl._evaluate import _dense, _has_uncertainty, _intervals, _load_prediction, _truth_layer

    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    loaded: dict[str, Any] = {}

    def load(key: str, need_truth: bool = False):
        if key not in loaded or (need_truth and loaded[key].truth is None):
            loaded[key] = _load_prediction(
                data, key, genes=genes, truth_layer=truth_layer, table_key=table_key, need_truth=need_truth
            )
        return loaded[key]

    # resolve every key before drawing anything
    plan = []
    for key in keys:
        if key == "truth":
            plan.append((key, "truth", None))
        elif key == "error":
            if not _has_prediction(data, pred_key):
                raise KeyError(f"`keys`: 'error' needs the prediction `pred_key` {pred_key!r}, which was not found.")
            plan.append((key, "error", pred_key))
        elif _has_prediction(data, key):
            plan.append((key, "mean", key))
        elif key.endswith(K.STD_SUFFIX) and _has_prediction(data, key[: -len(K.STD_SUFFIX)]):
            plan.append((key, "std", key[: -len(K.STD_SUFFIX)]))
        elif (width := _WIDTH_KEY.match(key)) and _has_prediction(data, width["base"]):
            if not 0 < float(width["label"]) < 100:
                raise KeyError(
                    f"`keys`: {key!r} asks for the interval width at {width['label']} %; the level must lie "
                    "strictly between 0 and 100 (e.g. '<prediction>_width90')."
                )
            plan.append((key, f"width{width['label']}", width["base"]))
        else:
            raise KeyError(
                f"`keys`: {key!r} is neither 'truth', 'error', a prediction, '<prediction>{K.STD_SUFFIX}' nor "
                f"'<prediction>_width<L>' (e.g. 'sthinge_width90'; `pred_key` is {pred_key!r})."
            )
    source = None
    meta: dict[str, tuple[str, str | None, str]] = {}
    for key, kind, base in plan:
        if kind == "truth":
            continue
        p = load(base, need_truth=kind == "error")
        source = p.source if source is None else source
        meta[key] = (kind, base, str(p.info.get("transform") or ""))
        if kind == "mean":
            out[key] = (p.rows, p.mean)
        elif kind == "std":
            if p.std is None:
                raise KeyError(f"`keys`: the prediction {base!r} has no standard deviation ({key!r}).")
            out[key] = (p.rows, p.std)
        elif kind.startswith("width"):
            level = float(kind.removeprefix("width")) / 100.0
            found = _intervals(p, [level]) if _has_uncertainty(p) else {}
            if not found:
                raise KeyError(
                    f"`keys`: the prediction {base!r} has no std, samples or quantile layers for an interval ({key!r})."
                )
            lo, hi, _ = found[level]
            out[key] = (p.rows, hi - lo)
        else:
            out[key] = (p.rows, np.abs(p.mean - p.truth))
    if any(kind == "truth" for _, kind, _ in plan):
        # the truth of every spot of the source table (not only the predicted ones)
        info = {}
        if _has_prediction(data, pred_key):
            p = load(pred_key)
            source, info = (p.source if source is None else source), p.info
        elif source is None:
            source, _ = _resolve_table(data, table_key)
        layer = _truth_layer(source, truth_layer, info)
        missing = [g for g in genes if g not in source.var_names]
        if missing:
            raise KeyError(f"`genes` {missing[:10]} not found in the table's `var_names`.")
        matrix = source.X if layer == "X" else source.layers[layer]
        out["truth"] = (np.arange(source.n_obs), _dense(matrix[:, source.var_names.get_indexer(genes)]))
        norm = source.uns.get(K.UNS_NORMALIZE)
        norm = norm if isinstance(norm, dict) else {}
        transform = (
            norm.get("transform")
            if layer == norm.get("key_added")
            else info.get("transform")
            if layer == (info.get("training_layer") or None)
            else ""
        )
        meta["truth"] = ("truth", None, str(transform or ""))
    return source, {k: out[k] for k in keys}, {k: meta[k] for k in keys}


# ----------------------------------------------------------------------------------------------------------
# image and spot geometry
# ----------------------------------------------------------------------------------------------------------
def _pick_level(image) -> tuple[Any, tuple[int, int]]:
    """A (c, y, x) DataArray of a level with longest side about ``_MAX_SIDE``, and the full-resolution (H, W)."""
    if hasattr(image, "children") and len(image.children):  # multiscale DataTree
        levels = []
        for node in image.children.values():
            arr = next(iter(node.ds.data_vars.values()))
            levels.append(arr)
        levels.sort(key=lambda a: -a.sizes["y"] * a.sizes["x"])
        full = (int(levels[0].sizes["y"]), int(levels[0].sizes["x"]))
        target = min(_MAX_SIDE, max(full))
        ok = [a for a in levels if max(a.sizes["y"], a.sizes["x"]) >= target]
        return (ok[-1] if ok else levels[0]), full
    return image, (int(image.sizes["y"]), int(image.sizes["x"]))


def _to_rgb(arr) -> np.ndarray:
    """(y, x, 3) float image in [0, 1] from a (c, y, x) DataArray, strided down to about ``_MAX_SIDE``."""
    step = max(1, int(np.ceil(max(arr.sizes["y"], arr.sizes["x"]) / (2 * _MAX_SIDE))))
    sub = arr.isel(y=slice(None, None, step), x=slice(None, None, step))
    img = np.asarray(sub.transpose("y", "x", "c").values)
    if img.shape[-1] >= 3:
        img = img[..., :3]
    else:
        img = np.repeat(img[..., :1], 3, axis=-1)
    if np.issubdtype(img.dtype, np.integer):
        return img.astype(np.float32) / float(np.iinfo(img.dtype).max if img.max() > 255 else 255)
    img = img.astype(np.float32)
    hi = float(np.nanmax(img)) if img.size else 1.0
    return np.clip(img / (hi if hi > 1.0 else 1.0), 0.0, 1.0)


def _section_image(data, source, section: str):
    """``(rgb, extent)`` of the section's H&E in the pixel frame of ``obsm["spatial"]``, or ``None``."""
    info = (
        source.uns.get(K.UNS_SECTIONS, {}).get(section, {}) if isinstance(source.uns.get(K.UNS_SECTIONS), dict) else {}
    )
    if _is_spatialdata(data):
        name = info.get("image") or f"{section}{K.IMAGE_SUFFIX}"
        if name not in data.images:
            return None
        level, (H, W) = _pick_level(data.images[name])
        return _to_rgb(level), _image_extent(data.images[name], section, H, W)
    spatial = source.uns.get("spatial")  # squidpy / scanpy layout
    if isinstance(spatial, dict) and spatial:
        lib = spatial.get(section) or (next(iter(spatial.values())) if len(spatial) == 1 else None)
        if isinstance(lib, dict) and lib.get("images"):
            images, scales = lib["images"], lib.get("scalefactors", {})
            for res in ("hires", "lowres"):
                if res in images:
                    img = np.asarray(images[res])
                    scale = float(scales.get(f"tissue_{res}_scalef", 1.0))
                    img = img.astype(np.float32) / (255.0 if img.max() > 1 else 1.0)
                    return img[..., :3], (0.0, img.shape[1] / scale, img.shape[0] / scale, 0.0)
    return None


def _image_extent(image, section: str, H: int, W: int) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` of an (H, W) image in the section's coordinate system (the pixel frame of
    ``obsm["spatial"]``): its scale and translation to the coordinate system named after the section, if it has
    one (e.g. a downscaled copy of the H&E with a ``Scale``), else its own pixels."""
    from spatialdata.transformations import get_transformation

    try:
        transform = get_transformation(image, get_all=True).get(section)
        m = None if transform is None else transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    except Exception:  # noqa: BLE001 - an element without readable transformations: its own pixels
        m = None
    if m is None or m[0, 1] != 0 or m[1, 0] != 0:  # none, or a rotation/shear: not drawn as an axis-aligned extent
        return (0.0, float(W), float(H), 0.0)
    x0, x1 = float(m[0, 2]), float(m[0, 0] * W + m[0, 2])
    y0, y1 = float(m[1, 2]), float(m[1, 1] * H + m[1, 2])
    return (x0, x1, y1, y0)


def _spot_radius(data, source, section: str, xy: np.ndarray) -> float:
    """Spot radius in the pixels of ``obsm["spatial"]``: from uns (diameter / mpp), the shapes, or the spacing."""
    info = source.uns.get(K.UNS_SECTIONS, {})
    info = info.get(section, {}) if isinstance(info, dict) else {}
    if info.get("mpp") and info.get("spot_diameter_um"):
        return float(info["spot_diameter_um"]) / float(info["mpp"]) / 2.0
    if _is_spatialdata(data):
        name = info.get("shapes") or f"{section}{K.SHAPES_SUFFIX}"
        if name in data.shapes and "radius" in data.shapes[name]:
            return float(np.median(data.shapes[name]["radius"]))
    spatial = source.uns.get("spatial")
    if isinstance(spatial, dict):
        lib = spatial.get(section) or (next(iter(spatial.values())) if len(spatial) == 1 else None)
        if isinstance(lib, dict) and lib.get("scalefactors", {}).get("spot_diameter_fullres"):
            return float(lib["scalefactors"]["spot_diameter_fullres"]) / 2.0
    if len(xy) > 1:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(xy).query(xy, k=2)
        return 0.45 * float(np.median(d[:, 1]))
    return 1.0


# ----------------------------------------------------------------------------------------------------------
# the plot
# ----------------------------------------------------------------------------------------------------------
@_figure_output
def spatial(
    data: AnnData | SpatialData,
    genes: str | Sequence[str],
    *,
    keys: Sequence[str] = ("truth", K.PRED_KEY, f"{K.PRED_KEY}{K.STD_SUFFIX}"),
    section: str | None = None,
    pred_key: str = K.PRED_KEY,
    truth_layer: str | None = None,
    img: bool = True,
    img_alpha: float = 0.6,
    cmap: str | Any = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    size: float = 1.0,
    ncols: int | None = None,
    figsize: tuple[float, float] | None = None,
    ax: Any = None,
    section_key: str = K.SECTION_KEY,
    table_key: str | None = None,
) -> Figure:
    """Plot measured, predicted and uncertainty maps of genes as spots over the section's H&E.

    For each gene one row of panels, one per entry of ``keys``, titled by what they show (``"measured"``,
    ``"predicted mean"``, ``"predicted SD"``, ``"absolute error"``, ``"90 % interval width"``; a prediction other
    than ``pred_key`` is named in brackets) under the section's name. Spots are drawn as circles of their true size
    (from ``uns["sthinge_sections"]``: spot diameter / micrometres per pixel, else the shapes' radius) with a thin
    white edge, over a lightened, downsampled level of the section's image placed in the same pixel frame as
    ``obsm["spatial"]``. The measured and every predicted mean of a gene share one colour scale, so they can be
    compared by eye; uncertainty and error maps have their own. Every scale runs from the 1st to the 99th
    percentile of its values, so single outlier spots do not flatten the rest (the colourbar's arrows show values
    beyond it); the colourbar is labelled with the unit of the values (e.g. ``log1p CP10k``, from the prediction's
    ``uns[key]["transform"]``). Spots without a value (not predicted) are grey.

    Parameters
    ----------
    data
        SpatialData (images are read from it) or AnnData (images from a squidpy-style ``uns["spatial"]`` if any).
    genes
        Gene(s) to plot (var names of the prediction's panel; any var name for ``keys=("truth",)``).
    keys
        What to draw, in order: ``"truth"`` (the measured log expression), the name of a prediction (its mean,
        e.g. ``"sthinge"`` or ``"ridge"``), ``"<prediction>_std"`` (its standard deviation), ``"error"`` (absolute
        error of ``pred_key``), ``"<prediction>_width<L>"`` (the width of its central L % interval, e.g.
        ``"sthinge_width90"``: from the quantile layers, the samples or mean +- z SD, as in
        :func:`sthinge.tl.evaluate`).
    section
        Section to draw (value of ``obs[section_key]``); default the first section that was predicted.
    pred_key
        The main prediction (its source table holds the truth).
    %(truth_layer)s
    img
        Draw the H&E image under the spots.
    img_alpha
        Opacity of the H&E image in [0, 1] (lower: paler, the spots stand out more).
    cmap
        Colormap of the values.
    vmin, vmax
        Limits of the colour scale of the measured and predicted-mean panels (default: the 1st and 99th percentile
        of their values, per gene). Give the same limits to two calls to compare them, e.g. measured spots of one
        object and predicted pseudo-spots of another. The SD and error panels keep their own limits.
    size
        Scale factor on the true spot radius.
    ncols
        Panels per row (default ``len(keys)``: one gene per row).
    figsize
        Figure size (default 4 x 4 inches per panel).
    ax
        Draw into this Axes (one panel) or these Axes (one per panel) instead of a new figure.
    %(table_params)s

    Examples
    --------
    >>> st.pl.spatial(sdata, ["ERBB2", "CD74"], section="A1")  # doctest: +SKIP
    >>> st.pl.spatial(sdata, "ERBB2", keys=["truth", "sthinge", "ridge", "error"], save="erbb2.png")  # doctest: +SKIP
    """
    import matplotlib as mpl
    from matplotlib.collections import EllipseCollection
    from matplotlib.colors import Normalize

    genes = list(dict.fromkeys(_as_list("genes", genes)))
    keys = list(dict.fromkeys(_as_list("keys", keys)))
    if isinstance(size, bool) or not isinstance(size, numbers.Real) or not math.isfinite(size) or size <= 0:
        raise ValueError(f"`size` must be a positive number, got {size!r}.")
    if ncols is not None and (not isinstance(ncols, int) or ncols < 1):
        raise ValueError(f"`ncols` must be a positive integer, got {ncols!r}.")
    if (
        isinstance(img_alpha, bool)
        or not isinstance(img_alpha, numbers.Real)
        or not math.isfinite(img_alpha)
        or not 0 <= img_alpha <= 1
    ):
        raise ValueError(f"`img_alpha` must be a number in [0, 1], got {img_alpha!r}.")
    for name, limit in (("vmin", vmin), ("vmax", vmax)):
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not math.isfinite(limit)
        ):
            raise ValueError(f"`{name}` must be a finite number or None, got {limit!r}.")
    if vmin is not None and vmax is not None and not vmin < vmax:
        raise ValueError(f"`vmin` ({vmin}) must be smaller than `vmax` ({vmax}).")
    source, values, meta = _key_values(
        data, keys, genes, pred_key=pred_key, truth_layer=truth_layer, table_key=table_key
    )

    # ---- the section -----------------------------------------------------------------------------------------
    labels = (
        source.obs[section_key].astype(str).to_numpy()
        if section_key in source.obs
        else np.full(source.n_obs, "all", dtype=object)
    )
    covered = np.unique(
        np.concatenate([rows for k, (rows, _) in values.items() if k != "truth"] or [values["truth"][0]])
    )
    available = list(dict.fromkeys(labels[covered]))
    if section is None:
        section = available[0]
        if len(available) > 1:
            logg.info(f"pl.spatial: drawing section {section!r} of {available}; pass `section=` to choose.")
    section = str(section)
    if section not in available:
        raise ValueError(f"`section` {section!r} not found among the plotted sections {available}.")
    sec_rows = np.flatnonzero(labels == section)
    if K.SPATIAL_KEY not in source.obsm:
        raise KeyError(f"`data` has no obsm[{K.SPATIAL_KEY!r}] spot coordinates to draw.")
    xy = np.asarray(source.obsm[K.SPATIAL_KEY], dtype=np.float64)[sec_rows, :2]
    from sthinge.pp._tiles import _check_finite

    _check_finite(section, xy, source.obs_names[sec_rows], f"`obsm[{K.SPATIAL_KEY!r}]`")
    pos = np.full(source.n_obs, -1)
    pos[sec_rows] = np.arange(len(sec_rows))
    maps = {}
    for key, (rows, vals) in values.items():
        full = np.full((len(sec_rows), len(genes)), np.nan)
        inside = pos[rows] >= 0
        full[pos[rows][inside]] = vals[inside]
        maps[key] = full

    radius = _spot_radius(data, source, section, xy) * float(size)
    image = _section_image(data, source, section) if img else None
    if isinstance(cmap, str):
        cmap = mpl.colormaps[cmap]
    cmap = cmap.with_extremes(bad=(0.75, 0.75, 0.75, 0.6))

    # ---- draw ------------------------------------------------------------------------------------------------
    n_panels = len(genes) * len(keys)
    fig, axes = _axes_grid(n_panels, ncols or len(keys), ax, panel_size=(4.2, 4.0), figsize=figsize)
    shared = [k for k in keys if meta[k][0] in ("truth", "mean")]
    lo_x, hi_x = xy[:, 0].min() - 2 * radius, xy[:, 0].max() + 2 * radius
    lo_y, hi_y = xy[:, 1].min() - 2 * radius, xy[:, 1].max() + 2 * radius
    if ax is None:  # a figure of its own: the section above all panels; else in each panel's title
        fig.suptitle(f"Section {section}", fontsize=12)
    where = "" if ax is None else f" ({section})"
    i = 0
    for g, gene in enumerate(genes):
        pooled = np.concatenate([maps[k][:, g] for k in shared]) if shared else np.array([])
        lo, hi = _robust_limits(pooled)
        shared_norm = Normalize(lo if vmin is None else float(vmin), hi if vmax is None else float(vmax))
        if shared_norm.vmin >= shared_norm.vmax:  # one limit given beyond the data's other end
            shared_norm = Normalize(
                float(vmin) if vmin is not None else shared_norm.vmax - 1.0,
                float(vmax) if vmax is not None else shared_norm.vmin + 1.0,
            )
        for key in keys:
            a = axes[i]
            i += 1
            v = maps[key][:, g]
            norm = shared_norm if key in shared else Normalize(*_robust_limits(v))
            if image is not None:
                a.imshow(image[0], extent=image[1], interpolation="bilinear", alpha=float(img_alpha))
            coll = EllipseCollection(
                widths=2 * radius,
                heights=2 * radius,
                angles=0,
                units="xy",
                offsets=xy,
                offset_transform=a.transData,
                cmap=cmap,
                norm=norm,
                linewidths=_EDGE_WIDTH,
                edgecolors=_EDGE,
            )
            coll.set_array(np.ma.masked_invalid(v))
            a.add_collection(coll)
            a.set_xlim(lo_x, hi_x)
            a.set_ylim(hi_y, lo_y)  # image coordinates: y down
            a.set_aspect("equal")
            a.set_xticks([])
            a.set_yticks([])
            kind, base, transform = meta[key]
            a.set_title(f"{gene}: {_panel_title(kind, base, pred_key)}{where}", fontsize=10)
            extend = _extend(pooled if key in shared else v, norm)  # one scale, one colourbar however drawn
            fig.colorbar(coll, ax=a, shrink=0.75, extend=extend, label=_colorbar_label(kind, transform))
    return fig


_ROBUST = (1.0, 99.0)  # percentiles spanned by a colour scale: single outlier spots do not set it
_EDGE, _EDGE_WIDTH = (1.0, 1.0, 1.0, 0.8), 0.4  # white spot outlines: dark colours stay visible on purple H&E
_UNITS = {"log1p_cp10k": "log1p CP10k", "log2_raw": "log2(1 + counts)"}


def _robust_limits(values: np.ndarray) -> tuple[float, float]:
    """The 1st and 99th percentile of the finite values (0, 1 without any; widened by 0.5 if they are equal)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return 0.0, 1.0
    lo, hi = (float(q) for q in np.percentile(finite, _ROBUST))
    return (lo, hi) if hi > lo else (lo - 0.5, hi + 0.5)


def _extend(values: np.ndarray, norm) -> str:
    """Colourbar arrows for values beyond the scale: ``"neither"``, ``"min"``, ``"max"`` or ``"both"``."""
    finite = values[np.isfinite(values)]
    below, above = bool((finite < norm.vmin).any()), bool((finite > norm.vmax).any())
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[below, above]


def _panel_title(kind: str, base: str | None, pred_key: str) -> str:
    """What a panel shows, in words; a prediction other than ``pred_key`` is named in brackets."""
    if kind.startswith("width"):
        name = f"{kind.removeprefix('width')} % interval width"
    else:
        name = {"truth": "measured", "mean": "predicted mean", "std": "predicted SD", "error": "absolute error"}[kind]
    return name if base is None or base == pred_key else f"{name} ({base})"


def _colorbar_label(kind: str, transform: str) -> str:
    """The colourbar's label: the quantity and the unit of the values (``log1p CP10k``, ``log2(1 + counts)``)."""
    unit = _UNITS.get(transform, transform.replace("_", " ") if transform else "")
    if kind in ("truth", "mean"):
        return f"expression ({unit})" if unit else "expression"
    what = (
        "SD over samples"
        if kind == "std"
        else "upper - lower bound"
        if kind.startswith("width")
        else "|predicted - measured|"
    )
    return f"{what} ({unit})" if unit else what
