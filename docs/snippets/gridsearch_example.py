"""Choose the size of the distilled set by cross-validation (runs in under a minute on a CPU).

Run with ``python docs/snippets/gridsearch_example.py``.
"""

from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV, train_test_split

from skdistill import DatasetDistiller, DistilledClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(
    X / 16, y, test_size=0.3, stratify=y, random_state=0
)

# Each candidate distils the training folds, then replays the learned recipe on a skorch net.
distiller = DatasetDistiller(max_iter=100)
clf = DistilledClassifier(distiller, random_state=0)
search = GridSearchCV(clf, {"distiller__n_distilled": [10, 20]}, cv=3)
search.fit(X_train, y_train)

print("best parameters:", search.best_params_)
print(f"cross-validated accuracy: {search.best_score_:.3f}")
print(f"test accuracy: {search.score(X_test, y_test):.3f}")
