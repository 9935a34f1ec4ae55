"""Classification: the Classifier and its Prediction."""

from ._classifier import DEFAULT_BATCH_SIZE, Classifier, PreparedInput
from ._prediction import Label, Prediction

__all__ = ["DEFAULT_BATCH_SIZE", "Classifier", "Label", "Prediction", "PreparedInput"]
