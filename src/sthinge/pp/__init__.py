"""Preprocessing: normalisation, gene panels, histology embeddings and pseudo-spot grids."""

from sthinge.pp._aggregate import aggregate_bins, aggregate_cells
from sthinge.pp._embed import embed_histology
from sthinge.pp._genes import select_genes
from sthinge.pp._grid import make_grid
from sthinge.pp._normalize import normalize

__all__ = ["normalize", "select_genes", "embed_histology", "make_grid", "aggregate_bins", "aggregate_cells"]
