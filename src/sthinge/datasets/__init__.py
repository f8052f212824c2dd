"""Datasets: real Her2ST sections and a small synthetic dataset, both as SpatialData."""

from sthinge.datasets._her2st import HER2ST_SECTIONS, her2st
from sthinge.datasets._synthetic import synthetic

__all__ = ["her2st", "synthetic", "HER2ST_SECTIONS"]
