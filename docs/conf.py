"""Sphinx configuration of the sthinge documentation."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from sthinge._version import __version__  # noqa: E402

project = "sthinge"
author = "sthinge developers"
copyright = "2026, sthinge developers"
version = release = __version__

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_typehints = "none"
autodoc_member_order = "bysource"
autodoc_mock_imports = []
nb_execution_mode = "off"  # tutorials are executed by the test suite (nbmake), not by the docs build
myst_enable_extensions = ["colon_fence", "dollarmath"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "design.md", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
html_theme = "sphinx_book_theme"
html_title = "sthinge"
suppress_warnings = ["myst.header"]
