"""Sphinx configuration of the sthinge documentation."""

import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))

from sthinge._version import __version__  # noqa: E402

project = "sthinge"
author = "sthinge developers"
copyright = "2026, sthinge developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
templates_path = ["_templates"]

# -- API: one page per public object (docs/generated/, written at build time, ignored by git) ----------------
autosummary_generate = True
autosummary_imported_members = False
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True  # an "Attributes" section must not describe the properties :members: documents again
# "Returns" sections are prose (what is written where, as bullet lists) or numpydoc "name / description" pairs;
# napoleon's field parser splits prose at every colon, so the section is kept as written (a definition list
# for the pairs) and the return type comes from the annotation
napoleon_custom_sections = ["Returns"]
autodoc_typehints = "description"  # type hints are shown with each parameter, not in the long signatures
autodoc_typehints_description_target = "all"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_mock_imports = []

# -- intersphinx ------------------------------------------------------------------------------------------
# The inventories are downloaded only when the build is allowed online (STHINGE_DOCS_ONLINE=1, or on Read the
# Docs). Offline (CI runs with access to package registries only) a failed download is a warning that -W turns
# into an error, and Sphinx gives it no type that `suppress_warnings` could silence; so offline the mapping is
# empty and the type hints are shown as plain names.
_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable", None),
    "pandas": ("https://pandas.pydata.org/docs", None),
    "matplotlib": ("https://matplotlib.org/stable", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable", None),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable", None),
    "torch": ("https://docs.pytorch.org/docs/stable", None),
    "lightning": ("https://lightning.ai/docs/pytorch/stable", None),
}
_ONLINE = os.environ.get("STHINGE_DOCS_ONLINE", "0") not in ("", "0") or os.environ.get("READTHEDOCS") == "True"
intersphinx_mapping = _INTERSPHINX if _ONLINE else {}
intersphinx_timeout = 10  # seconds per inventory: an unreachable site must not stall the build
# names the package imports only for type checking appear unqualified in the type hints; qualified, they link
_QUALIFIED = {
    "AnnData": "anndata.AnnData",
    "SpatialData": "spatialdata.SpatialData",
    "Figure": "matplotlib.figure.Figure",
    "Axes": "matplotlib.axes.Axes",
}


def _qualify_reference(app, env, node, contnode):
    """Resolve an unqualified ``AnnData`` (etc.) of a type hint through intersphinx under its full name."""
    target = _QUALIFIED.get(node.get("reftarget"))
    if target is None or node.get("refdomain") != "py" or not app.config.intersphinx_mapping:
        return None
    from sphinx.ext.intersphinx import missing_reference

    node["reftarget"] = target
    return missing_reference(app, env, node, contnode)


# -- tutorials: ../tutorials/*.ipynb are copied here and executed in fast mode -----------------------------
# The notebooks are stored without outputs; the build runs them with STHINGE_TUTORIAL_FAST=1 (synthetic data,
# tiny models, no downloads) so that the site shows every cell's output, and fails if a cell fails.
# STHINGE_DOCS_EXECUTE=0 skips the execution (the tutorials are then rendered without outputs).
_TUTORIALS_SRC = HERE.parent / "tutorials"
_TUTORIALS_DST = HERE / "generated" / "tutorials"


def _copy_tutorials() -> None:
    """Mirror ``../tutorials/*.ipynb`` into ``docs/generated/tutorials`` (Sphinx reads only its source folder).

    Unchanged notebooks are not copied again, so that an incremental build does not re-read them.
    """
    _TUTORIALS_DST.mkdir(parents=True, exist_ok=True)
    wanted = {p.name: p for p in sorted(_TUTORIALS_SRC.glob("[0-9][0-9]_*.ipynb"))}
    for stale in _TUTORIALS_DST.glob("*.ipynb"):
        if stale.name not in wanted:
            stale.unlink()
    for name, src in wanted.items():
        dst = _TUTORIALS_DST / name
        if not dst.exists() or not filecmp.cmp(src, dst, shallow=False):
            shutil.copyfile(src, dst)


_copy_tutorials()
_EXECUTE = os.environ.get("STHINGE_DOCS_EXECUTE", "1") not in ("", "0")
nb_execution_mode = "force" if _EXECUTE else "off"
nb_execution_timeout = 300  # seconds per cell, as in tests/test_tutorials.py
nb_execution_raise_on_error = True
nb_execution_in_temp = True  # the notebooks write nothing into the source tree
nb_merge_streams = True
# the kernel inherits this environment: fast mode, this checkout's sources, a private cache (the tutorials save
# models and, in 02, 1.5 GB of random stand-in weights there) and matplotlib's inline backend
os.environ["STHINGE_TUTORIAL_FAST"] = "1"
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))
_CACHE = tempfile.mkdtemp(prefix="sthinge-docs-cache-")  # removed when the build ends (see setup)
os.environ["STHINGE_CACHE_DIR"] = _CACHE
os.environ.pop("MPLBACKEND", None)
myst_enable_extensions = ["colon_fence", "dollarmath"]
# ".rst" first: autosummary writes its pages (reStructuredText) with the first suffix
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "_templates", "design.md", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
html_theme = "sphinx_book_theme"
html_title = "sthinge"
suppress_warnings = ["myst.header"]


def setup(app):
    app.connect("missing-reference", _qualify_reference)
    app.connect("build-finished", lambda app, exc: shutil.rmtree(_CACHE, ignore_errors=True))
