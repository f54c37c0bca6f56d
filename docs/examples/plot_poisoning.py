"""
A malicious objective: ten images that make 3s read as 8s
=========================================================

Wang et al. (2018) also distil for an attacker: images that, used for a few training steps
on an already well-trained classifier, make it misclassify one class as another while the
other classes stay right. ``relabel={3: 8}`` asks exactly that of the outer objective:
networks trained on the synthetic set should predict 8 for real images of 3, and the true
class for everything else.

The distribution p(θ0) is a list of trained networks (``model_init=[...]``), and the attack
is then tried on a trained network it never saw.
"""

# %%
import copy

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import ConfusionMatrixDisplay

from skdistill import DatasetDistiller, load_digits_images
from skdistill.nets import MLP
from skdistill.plotting import plot_distilled

data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test


def predict(net, X):
    with torch.no_grad():
        return net(torch.as_tensor(X)).argmax(1).numpy()


def report(net, name):
    predicted = predict(net, X_test)
    threes = y_test == 3
    print(f"{name}: 3s read as 8 {np.mean(predicted[threes] == 8):.3f}, "
          f"accuracy on the other digits {np.mean(predicted[~threes] == y_test[~threes]):.3f}")


# %%
# Four well-trained classifiers
# -----------------------------
# MLPs trained with Adam on the full training set, from different seeds. The first three
# make up p(θ0); the fourth is kept apart.
victims = []
for seed in range(4):
    torch.manual_seed(seed)
    net = MLP(n_features=64, n_classes=10)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):
        optimizer.zero_grad()
        F.cross_entropy(net(torch.as_tensor(X_train)), torch.as_tensor(y_train)).backward()
        optimizer.step()
    victims.append(net)
    report(net, f"network {seed}, as trained")

# %%
# Distil for the attacker
# -----------------------
# The validation score of a fit with ``relabel`` measures the relabelled objective.
distiller = DatasetDistiller(n_distilled=10, model_init=victims[:3], relabel={3: 8},
                             max_iter=300, random_state=0).fit(X_train, y_train)
print(f"validation accuracy on the relabelled objective: "
      f"{distiller.best_validation_score_:.3f}")

# %%
# The attack on every network, including the unseen one
# -----------------------------------------------------
# The recipe is plain gradient descent: for each step, the rows of the synthetic set it
# uses and its step size (:meth:`~skdistill.DatasetDistiller.training_steps`), with the
# cross-entropy against ``distilled_y_proba_``. Replaying it by hand works on any network of
# the same architecture.


def replay(net, distiller):
    net = copy.deepcopy(net)
    X_syn = torch.as_tensor(distiller.distilled_X_, dtype=torch.float32)
    targets = torch.as_tensor(distiller.distilled_y_proba_, dtype=torch.float32)
    for rows, step_size in distiller.training_steps():
        net.zero_grad()
        F.cross_entropy(net(X_syn[rows]), targets[rows]).backward()
        with torch.no_grad():
            for parameter in net.parameters():
                parameter -= step_size * parameter.grad
    return net


attacked = [replay(net, distiller) for net in victims]
for seed, net in enumerate(attacked):
    report(net, f"network {seed}, after the ten steps{' (unseen)' if seed == 3 else ''}")

# %%
# The unseen network before and after
# -----------------------------------
fig, axes = plt.subplots(1, 2, figsize=(9, 4))
for ax, net, title in zip(axes, (victims[3], attacked[3]), ("as trained", "after ten steps")):
    ConfusionMatrixDisplay.from_predictions(y_test, predict(net, X_test), ax=ax,
                                            colorbar=False)
    ax.set_title(f"unseen network, {title}", fontsize=9)
fig.tight_layout()

# %%
# The poisoned images carry their honest labels (``distilled_y_`` is one of each class);
# what they do lies in the pixels and the step sizes.
plot_distilled(distiller)
