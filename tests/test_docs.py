"""Docstrings of the public API: shared entries filled in, every parameter documented; the docs' own rules."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest

from sthinge._docs import _PARAMS, _doc, _fill

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("sthinge.datasets", "sthinge.io", "sthinge.models", "sthinge.pl", "sthinge.pp", "sthinge.tl")
_SECTION = re.compile(r"^(?P<title>[A-Z][A-Za-z ]*)\n-{3,}$", re.M)


def _public_functions() -> list[tuple[str, object]]:
    return [(name, obj) for name, obj in _public_objects() if inspect.isfunction(obj) and name.count(".") == 2]


def _public_objects() -> list[tuple[str, object]]:
    """Public functions, classes and the public methods of the classes."""
    out = []
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in module.__all__:
            obj = getattr(module, attr)
            if inspect.isfunction(obj):
                out.append((f"{name}.{attr}", obj))
            elif inspect.isclass(obj):
                out.append((f"{name}.{attr}", obj))
                out += [(f"{name}.{attr}.{k}", v) for k, v in vars(obj).items() if not k.startswith("_")]
    return out


def documented_parameters(doc: str) -> list[str] | None:
    """Names listed in the numpydoc ``Parameters`` section of ``doc`` (``None`` if it has none)."""
    doc = inspect.cleandoc(doc)
    headers = list(_SECTION.finditer(doc))
    for i, header in enumerate(headers):
        if header["title"] == "Parameters":
            end = headers[i + 1].start() if i + 1 < len(headers) else len(doc)
            body = doc[header.end() : end]
            names = []
            for line in body.splitlines():
                if line and not line[0].isspace():
                    names += [n.strip().lstrip("*") for n in line.split(" : ")[0].split(",")]
            return names
    return None


def docstring_problems(func) -> list[str]:
    """What is wrong with ``func``'s docstring: unfilled markers, parameters of the signature it does not list."""
    doc = func.__doc__ or ""
    problems = []
    if "%(" in doc:
        problems.append("unfilled %(...)s marker")
    listed = documented_parameters(doc)
    wanted = [p for p in inspect.signature(func).parameters if p not in ("self", "cls")]
    if wanted and listed is None:
        problems.append("no Parameters section")
    elif wanted:
        missing = [p for p in wanted if p not in listed]
        unknown = [n for n in listed if n not in wanted]
        if missing:
            problems.append(f"parameters not documented: {missing}")
        if unknown:
            problems.append(f"documented but not in the signature: {unknown}")
    return problems


def test_public_functions_found():
    names = {name for name, _ in _public_functions()}
    assert {"sthinge.pp.normalize", "sthinge.tl.fit", "sthinge.pl.spatial", "sthinge.models.sample"} <= names


@pytest.mark.parametrize(("name", "func"), _public_functions(), ids=lambda v: v if isinstance(v, str) else "")
def test_public_function_docstring(name, func):
    assert docstring_problems(func) == [], name


def test_no_unfilled_markers_anywhere():
    bad = [name for name, obj in _public_objects() if "%(" in (getattr(obj, "__doc__", None) or "")]
    assert bad == []


def test_checker_catches_problems():
    """The checks above can fail: a missing parameter, a stray one, no section, an unfilled marker."""

    def missing(a, b, *, c=1):
        """Summary.

        Parameters
        ----------
        a
            The a.
        c, d
            Two at once.
        """

    def no_section(a):
        """Summary only."""

    def marker(a):
        """Summary.

        Parameters
        ----------
        %(table_key)s
        """

    assert docstring_problems(missing) == [
        "parameters not documented: ['b']",
        "documented but not in the signature: ['d']",
    ]
    assert docstring_problems(no_section) == ["no Parameters section"]
    assert "unfilled %(...)s marker" in docstring_problems(marker)


def test_doc_fills_entries_with_indentation_and_continuation():
    @_doc
    def f(table_key=None, section_key="section"):
        """Summary.

        Parameters
        ----------
        %(section_key)s
            Something only f adds.
        %(table_key)s
        """

    doc = inspect.cleandoc(f.__doc__)
    assert documented_parameters(doc) == ["section_key", "table_key"]
    assert "    Something only f adds." in doc.splitlines()
    assert docstring_problems(f) == []
    first = _PARAMS["section_key"].splitlines()
    assert doc.splitlines()[4:6] == first


def test_doc_refuses_unknown_or_inline_markers():
    with pytest.raises(KeyError, match="nonexistent"):
        _fill("    %(nonexistent)s\n")
    with pytest.raises(ValueError, match="alone on its line"):
        _fill("    see %(table_key)s here\n")


def test_api_page_lists_every_public_function_and_class():
    """docs/api.md has an autosummary entry (so a page of its own) for each public function and class."""
    text = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^   (\w+\.\w+)$", text, re.M))
    wanted = {
        name.removeprefix("sthinge.")
        for name, obj in _public_objects()
        if name.count(".") == 2 and (inspect.isfunction(obj) or inspect.isclass(obj))
    }
    assert wanted <= listed, sorted(wanted - listed)


def test_no_references_outside_the_repository():
    """Package, docs, README and tutorials cite the Method page or the paper, never a file the repository lacks."""
    hits = []
    for folder in ("src", "docs", "tutorials"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in {".py", ".md", ".ipynb", ".rst"} and "generated" not in path.parts:
                if "METHOD.md" in path.read_text(encoding="utf-8"):
                    hits.append(str(path.relative_to(ROOT)))
    if "METHOD.md" in (ROOT / "README.md").read_text(encoding="utf-8"):
        hits.append("README.md")
    assert hits == []


def test_method_labels_cited_in_docstrings_exist():
    """Every :ref:`method-...` in the package names a section label of docs/method.md."""
    labels = set(re.findall(r"^\((method-[\w-]+)\)=$", (ROOT / "docs" / "method.md").read_text(), re.M))
    cited = set()
    for path in (ROOT / "src" / "sthinge").rglob("*.py"):
        cited |= set(re.findall(r":ref:`(method-[\w-]+)`", path.read_text(encoding="utf-8")))
    for path in (ROOT / "docs").glob("*.md"):
        cited |= set(re.findall(r"\{ref\}`(method-[\w-]+)`", path.read_text(encoding="utf-8")))
    assert cited, "no citation found: the pattern is wrong"
    assert cited <= labels, sorted(cited - labels)
