"""Classification: the Classifier and its Prediction."""

from ._classifier import DEFAULT_BATCH_SIZE, Classifier, PreparedInput
from ._explain import EXPLANATION_GRID, DeletionCheck, Explanation, deletion_check
from ._prediction import Label, Prediction
from ._redact import DEFAULT_BLUR_STRENGTH, DEFAULT_HEAT_THRESHOLD, Redaction, blur_whole
from ._video import Segment, VideoPrediction

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_BLUR_STRENGTH",
    "DEFAULT_HEAT_THRESHOLD",
    "EXPLANATION_GRID",
    "Classifier",
    "DeletionCheck",
    "Explanation",
    "Label",
    "Prediction",
    "PreparedInput",
    "Redaction",
    "Segment",
    "VideoPrediction",
    "blur_whole",
    "deletion_check",
]
