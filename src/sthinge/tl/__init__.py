"""Tools: train HINGE, sample predictions, evaluate them, baselines and cross-validation."""

from sthinge.tl._backbone import default_backbone
from sthinge.tl._baselines import BaselineModel, fit_baseline, predict_baseline
from sthinge.tl._calibrate import calibrate
from sthinge.tl._cohort import predict_cohort
from sthinge.tl._conformal import Calibration
from sthinge.tl._crossval import CrossValidationDetails, cross_validate
from sthinge.tl._evaluate import Coexpression, coexpression, compare, evaluate
from sthinge.tl._fit import fit
from sthinge.tl._model import HingeModel
from sthinge.tl._predict import predict
from sthinge.tl._pretrain import pretrain_backbone

__all__ = [
    "fit",
    "predict",
    "predict_cohort",
    "calibrate",
    "HingeModel",
    "Calibration",
    "pretrain_backbone",
    "default_backbone",
    "evaluate",
    "coexpression",
    "compare",
    "cross_validate",
    "fit_baseline",
    "predict_baseline",
    "BaselineModel",
    "Coexpression",
    "CrossValidationDetails",
]
