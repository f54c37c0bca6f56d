import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

# Tests are tiny: one torch thread avoids oversubscribing the cores when pytest workers or
# GridSearchCV(n_jobs=2) run beside each other.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits_split():
    """Digits scaled to [0, 1], stratified 70/30 split (the split the README reports)."""
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float64)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.fixture(scope="session")
def tiny_data():
    """Three well separated classes in 6 dimensions: fits in a fraction of a second."""
    rng = np.random.RandomState(0)
    centers = rng.normal(0, 3, size=(3, 6))
    y = np.repeat(np.arange(3), 30)
    X = centers[y] + rng.normal(0, 0.5, size=(90, 6))
    return X, y


@pytest.fixture(scope="session")
def bench_script():
    """Import a script of ``benchmarks/`` by name (they are scripts, not a package)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
