"""Docstring text shared by the functions of ``pp``, ``tl``, ``pl`` and a few of ``models``, written once and
filled in by :func:`_doc`.

A docstring names a shared entry with a marker alone on its line, ``%(name)s``, indented like the parameter names
of its section. :func:`_doc` replaces the marker by the entry, indented the same way. Lines indented under a marker
continue the entry's description, for what only that function adds::

    @_doc
    def f(data, *, section_key="section", table_key=None):
        '''...

        Parameters
        ----------
        %(section_key)s
            A table without the column is one section.
        %(table_key)s
        '''

An unknown marker, or a marker that is not alone on its line, is an error when the module is imported.
"""

from __future__ import annotations

import re

_PARAMS: dict[str, str] = {
    "table_key": """\
table_key
    Table of a SpatialData object (default: ``"table"``, or the only table); only for SpatialData input.""",
    "source_table_key": """\
table_key
    Table of a SpatialData object holding the truth the prediction is compared with (default: the table the
    prediction was made from, else ``"table"`` or the only table).""",
    "section_key": """\
section_key
    ``obs`` column naming each spot's section.""",
    "copy": """\
copy
    Leave ``data`` unchanged and return a modified copy of it, of the same type (SpatialData in, SpatialData out;
    AnnData in, AnnData out). A SpatialData's copy holds copies of its tables and shapes and shares its images,
    labels and points with ``data``; an existing output in the copy is replaced without ``overwrite``.""",
    "inplace": """\
inplace
    Write the result into ``data`` and return ``None`` (default); with ``False``, write nothing into ``data`` and
    return the new object instead (``overwrite`` is then not needed).""",
    "returns_prediction": """\
Returns
-------
``None``: the prediction is written into ``data`` (see below). With ``inplace=False``: the prediction table (an
AnnData, for SpatialData and AnnData input alike), and nothing is written.""",
    "layer_lognorm": """\
layer
    Layer of log-normalised expression (default: the layer :func:`sthinge.pp.normalize` wrote). Raw counts are
    refused.""",
    "embedding_key": """\
embedding_key
    ``obsm`` key of the histology embedding (written by :func:`sthinge.pp.embed_histology`).""",
    "genes_key": """\
genes_key
    ``uns`` key of the gene panel written by :func:`sthinge.pp.select_genes`.""",
    "pred_key": """\
pred_key
    Name of the prediction (the ``key_added`` of :func:`sthinge.tl.predict` or :func:`sthinge.tl.predict_baseline`):
    a table of a SpatialData object, ``obsm[pred_key]`` of an AnnData.""",
    "truth_layer": """\
truth_layer
    Layer of the source table holding the true log expression (``"X"`` for ``X``). Default: the layer the model
    was trained on, else the layer :func:`sthinge.pp.normalize` wrote.""",
    "device": """\
device
    Torch device: ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``. A
    device this machine does not have is refused before any work.""",
    # plotting
    "figsize_ax": """\
figsize
    Figure size.
ax
    Axes to draw into instead of a new figure.""",
    "save_params": """\
save
    Write the figure to this path (format from the suffix; written atomically).
return_fig
    Return the figure.
dpi
    Resolution when saving.
overwrite
    Replace an existing file at ``save``; without it, an existing file is an error raised before drawing.""",
    "returns_fig": """\
Returns
-------
The :class:`matplotlib.figure.Figure` if ``return_fig``, else ``None``.""",
}
_PARAMS["table_params"] = _PARAMS["section_key"] + "\n" + _PARAMS["source_table_key"]
_PARAMS["gaussian_forecast"] = """\
mean, std
    Predicted μ and σ > 0 (broadcastable to ``x``).
x
    Observations."""
_PARAMS["inplace_prediction"] = (
    _PARAMS["inplace"]
    + """
    The new object is the prediction table, for SpatialData and AnnData input alike."""
)

_MARKER = re.compile(r"(?P<indent>[ \t]*)%\((?P<name>\w+)\)s[ \t]*")


def _fill(doc: str) -> str:
    """``doc`` with every marker line replaced by its shared entry."""
    lines = []
    for line in doc.split("\n"):
        match = _MARKER.fullmatch(line)
        if match is None:
            lines.append(line)
            continue
        name = match["name"]
        if name not in _PARAMS:
            raise KeyError(f"Unknown docstring marker %({name})s; known: {sorted(_PARAMS)}.")
        lines.extend(match["indent"] + text if text else text for text in _PARAMS[name].split("\n"))
    filled = "\n".join(lines)
    if "%(" in filled:
        raise ValueError(f"A docstring marker is not alone on its line: {filled[filled.index('%(') :][:60]!r}.")
    return filled


def _doc(obj):
    """Decorator: fill the shared entries (``%(name)s`` markers) of ``obj``'s docstring."""
    if obj.__doc__:  # None under python -OO
        obj.__doc__ = _fill(obj.__doc__)
    return obj
