"""Plotting: spatial maps of truth, prediction and uncertainty; co-expression; metrics; calibration; training curves."""

from sthinge.pl._calibration import calibration
from sthinge.pl._coexpression import coexpression
from sthinge.pl._history import history
from sthinge.pl._metrics import metrics
from sthinge.pl._spatial import spatial

__all__ = ["spatial", "coexpression", "metrics", "history", "calibration"]
