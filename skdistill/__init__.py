"""skdistill: dataset distillation as scikit-learn estimators."""

from .classifier import DistilledClassifier
from .coreset import ClassMeans, Herding, KCenterGreedy, KMeansSelector, RandomSelector
from .datasets import load_cifar10, load_digits_images, load_fashion_mnist, load_mnist
from .distiller import DatasetDistiller
from .preprocessing import ZCAWhitening
from .scoring import TrainingScorer

__version__ = "0.1.0"

__all__ = [
    "DatasetDistiller", "DistilledClassifier", "TrainingScorer", "ZCAWhitening",
    "RandomSelector", "ClassMeans", "KMeansSelector", "Herding", "KCenterGreedy",
    "load_digits_images", "load_fashion_mnist", "load_mnist", "load_cifar10",
    "__version__",
]
