"""skdistill: dataset distillation as scikit-learn estimators."""

from .distiller import DatasetDistiller

__version__ = "0.1.0"

__all__ = ["DatasetDistiller", "__version__"]
