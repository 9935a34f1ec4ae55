"""Classification: the Classifier and its Prediction."""

from ._classifier import DEFAULT_BATCH_SIZE, Classifier
from ._prediction import Label, Prediction

__all__ = ["DEFAULT_BATCH_SIZE", "Classifier", "Label", "Prediction"]
