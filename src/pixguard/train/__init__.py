"""Custom policies: fine-tune, evaluate and calibrate on your own labelled images."""

from ._config import FinetuneConfig
from ._data import Dataset, Sample, load_dataset
from ._evaluate import calibrate, evaluate
from ._finetune import FinetuneResult, finetune
from ._probe import train_probe

__all__ = [
    "Dataset",
    "FinetuneConfig",
    "FinetuneResult",
    "Sample",
    "calibrate",
    "evaluate",
    "finetune",
    "load_dataset",
    "train_probe",
]
