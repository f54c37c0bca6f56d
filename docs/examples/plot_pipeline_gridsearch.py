"""
Pipelines and grid search
=========================

:class:`~skdistill.DatasetDistiller` is an imbalanced-learn style *sampler*: its
``fit_resample`` returns the synthetic set, so it can stand inside an
:class:`imblearn.pipeline.Pipeline`, where the next step is fitted on the synthetic set
only. :class:`~skdistill.DistilledClassifier` wraps distillation and training of a network
into one scikit-learn classifier, whose nested parameters (``distiller__n_distilled``) a
:class:`~sklearn.model_selection.GridSearchCV` can tune.
"""

# %%
import time

import matplotlib.pyplot as plt
from imblearn.pipeline import make_pipeline
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier

from skdistill import DatasetDistiller, DistilledClassifier, load_digits_images

data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test

# %%
# A sampler in a Pipeline
# -----------------------
# Fitting the pipeline distils the training set into 30 images, then fits a 1-nearest-
# neighbour classifier on those 30 images alone; predicting sends the test images straight
# to the classifier (samplers act during ``fit`` only). Larger initial and outer step sizes
# than the defaults let 100 outer iterations suffice.
fast = dict(max_iter=100, inner_lr_init=0.3, learning_rate=0.05, random_state=0)
pipe = make_pipeline(DatasetDistiller(n_distilled=30, **fast), KNeighborsClassifier(1))
start = time.perf_counter()
pipe.fit(X_train, y_train)
print(f"fitted in {time.perf_counter() - start:.1f} s; "
      f"1-NN trained on {pipe[-1].n_samples_fit_} images")
print(f"test accuracy of 1-NN on the distilled images: {pipe.score(X_test, y_test):.3f}")

# %%
# The images were made to train a network in ten steps, yet on digits they also serve as
# nearest-neighbour prototypes. The fitted distiller is the pipeline's first step; its own
# ``score`` is the use they were made for (the learned recipe, from five θ0 draws):
print(f"learned recipe on the same images: {pipe[0].score(X_test, y_test):.3f}")

# %%
# Grid search over the size of the distilled set
# ----------------------------------------------
# :class:`~skdistill.DistilledClassifier` fits a clone of its ``distiller`` and then trains
# a skorch network on the synthetic set by replaying the learned recipe
# (``training="learned"``). Each candidate and fold distils its own training folds.
clf = DistilledClassifier(DatasetDistiller(**fast), random_state=0)
search = GridSearchCV(clf, {"distiller__n_distilled": [10, 20]}, cv=2)
start = time.perf_counter()
search.fit(X_train, y_train)
print(f"searched in {time.perf_counter() - start:.1f} s")
print("best:", search.best_params_, f"cross-validated accuracy {search.best_score_:.3f}")
print(f"test accuracy of the refitted best: {search.score(X_test, y_test):.3f}")

# %%
sizes = search.cv_results_["param_distiller__n_distilled"].data.astype(int)
fig, ax = plt.subplots(figsize=(4.5, 3))
ax.errorbar(sizes, search.cv_results_["mean_test_score"],
            yerr=search.cv_results_["std_test_score"], marker="o", capsize=3)
ax.set_xlabel("n_distilled (synthetic images)")
ax.set_ylabel("2-fold CV accuracy")
ax.set_xticks(sizes)
fig.tight_layout()

# %%
# ``GridSearchCV`` can also search a :class:`~skdistill.DatasetDistiller` directly: its
# ``score`` is the accuracy of the learned recipe, e.g.
# ``GridSearchCV(DatasetDistiller(), {"n_steps": [5, 10, 20]})``.
print("predicted:", search.predict(X_test[:10]))
print("true:     ", y_test[:10])
