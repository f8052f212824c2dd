"""The tutorial notebooks run end to end in fast mode (``STHINGE_TUTORIAL_FAST=1``: synthetic data, tiny models).

Each notebook writes a small JSON of its final numbers into ``$STHINGE_TUTORIAL_OUT``; the tests check them. Fast mode
needs no real data and no downloads, so these tests always run. Each takes 30-90 s on two CPU cores.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("[0-9][0-9]_*.ipynb"))

EXPECTED = {
    "01_quickstart_her2st.ipynb": {
        "held_out",
        "n_genes",
        "hinge_pcc50",
        "ridge_pcc50",
        "hinge_pcc50_rank_by_pcc",
        "hinge_mse",
        "coexpression_similarity",
        "moran_median_predicted",
        "n_domains",
        "hinge_coverage90",
        "hinge_coverage90_section_calibrated",
        "ridge_coverage90",
        "hinge_unc_spearman",
        "n_trusted_genes",
        "n_trusted_spots",
    },
    "02_your_own_weights.ipynb": {
        "embedding_dim",
        "n_embedded",
        "backbone_params",
        "pcc50",
        "mse",
        "scgpt_params",
        "scgpt_pcc50",
        "scgpt_mse",
    },
    "03_he_only_slide.ipynb": {"n_pseudo_spots", "n_genes", "mean_prediction", "mean_std", "mean_width90"},
    "04_whole_slide_to_domains.ipynb": {
        "n_pseudo_spots",
        "n_genes",
        "n_domains",
        "store_mb",
        "mean_prediction",
        "slide_mpp",
    },
}
CELL_TIMEOUT = 300  # seconds per cell


def _read(name: str):
    import nbformat

    return nbformat.read(TUTORIALS / name, as_version=4)


def test_all_tutorials_listed():
    assert NOTEBOOKS == sorted(EXPECTED)
    readme = (TUTORIALS / "README.md").read_text()
    docs = (TUTORIALS.parent / "docs" / "tutorials.md").read_text()
    for name in NOTEBOOKS:
        assert name in readme and name in docs, name


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_clean(name):
    """Committed notebooks are valid, carry no outputs, and read the fast-mode switch in their first code cell."""
    import nbformat

    nb = _read(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, name
    for cell in code:
        assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs before committing"
    assert "STHINGE_TUTORIAL_FAST" in code[0].source
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_tutorial_runs_fast(name, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient

    out = tmp_path / "out"
    out.mkdir()
    # the kernel inherits this environment: fast mode, where to write the numbers, a cold private cache, the
    # inline matplotlib backend (figures are rendered and closed), and this checkout's sources on the path
    monkeypatch.setenv("STHINGE_TUTORIAL_FAST", "1")
    monkeypatch.setenv("STHINGE_TUTORIAL_OUT", str(out))
    monkeypatch.setenv("STHINGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    src = str(TUTORIALS.parent / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))

    nb = _read(name)
    client = NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()

    result = json.loads((out / name.replace(".ipynb", ".json")).read_text())
    assert set(result) == EXPECTED[name]
    for key, value in result.items():
        if isinstance(value, int | float):
            assert math.isfinite(value), f"{name}: {key} = {value}"
    assert not (tmp_path / "cache" / "tutorial-standin-weights").exists()  # notebook 02 cleans its 1.5 GB up
