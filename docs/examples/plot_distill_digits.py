"""
Distil the digits into one image per class
==========================================

Ten synthetic 8×8 images and ten learned step sizes: a network started from a fresh random
initialisation and trained by ten gradient-descent steps on those ten images classifies the
real test digits nearly as well as one trained on the 1,257 real training images.

This is the "compressed representation" of Wang et al. (2018): the architecture, the
distribution of initial weights, the learned step sizes and the synthetic set.
"""

# %%
# Data: the 8×8 digits of scikit-learn, scaled to [0, 1]
# -------------------------------------------------------
# :func:`~skdistill.load_digits_images` returns a stratified 70/30 split as flat rows.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from skdistill import DatasetDistiller, RandomSelector, load_digits_images
from skdistill.plotting import plot_distilled, plot_learning_curve

data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
print(f"{X_train.shape[0]} training and {X_test.shape[0]} test images of {data.image_shape}")

# %%
# Distil
# ------
# ``n_distilled=10`` synthetic images (one per class) and ``n_steps=10`` learned step sizes,
# for the default MLP (one hidden layer of 256 units). Every outer iteration draws four
# fresh initialisations θ0 ~ p(θ0) (``model_init="random"``), trains each for ten steps on
# the synthetic set, and moves the images and step sizes down the gradient of the loss on
# 256 real images. 10 % of the training set is held out, and the best state on it is kept.
distiller = DatasetDistiller(n_distilled=10, max_iter=300, random_state=0)
start = time.perf_counter()
distiller.fit(X_train, y_train)
print(f"distilled in {time.perf_counter() - start:.1f} s on {distiller.device_}; "
      f"state of iteration {distiller.best_iter_} kept "
      f"(validation accuracy {distiller.best_validation_score_:.3f})")
print("learned step sizes:", np.round(distiller.learned_lr_, 3))

# %%
# The ten images, and the fit's curves
# ------------------------------------
# They start as randomly chosen real digits (``init="real"``) and end up as "prototypes"
# that encode what ten steps of gradient descent need to see.
plot_distilled(distiller)

# %%
# The meta-loss is measured on a different minibatch of real images and different θ0 draws
# at each iteration, hence the noise; the validation accuracy uses four θ0 draws fixed for
# the whole fit, so its points compare.
plot_learning_curve(distiller)

# %%
# Evaluate: the learned recipe from fresh initialisations
# -------------------------------------------------------
# :meth:`~skdistill.DatasetDistiller.evaluate` trains one network per θ0 draw, exactly as
# during the fit (ten steps with ``learned_lr_``), and returns each one's test accuracy.
# For comparison: ten random real images (one per class) trained by the same ten steps with
# a constant, untuned step size, and a network at its initialisation.
distilled = distiller.evaluate(X_test, y_test, n_inits=10, random_state=1)
random_real = RandomSelector(n_distilled=10, random_state=0).fit(X_train, y_train)
baseline = random_real.evaluate(X_test, y_test, n_inits=10, random_state=1)

untrained = distiller.sample_model_init(random_state=1)
with torch.no_grad():
    logits = untrained(torch.as_tensor(X_test))
chance = float(np.mean(distiller.classes_[logits.argmax(1).numpy()] == y_test))

print(f"distilled, learned recipe : {distilled.mean():.3f} ± {distilled.std():.3f}")
print(f"random real, constant step: {baseline.mean():.3f} ± {baseline.std():.3f}")
print(f"network at θ0 (no training): {chance:.3f}")

fig, ax = plt.subplots(figsize=(5, 2.4))
ax.barh(["network at θ0", "10 random real images", "10 distilled images"],
        [chance, baseline.mean(), distilled.mean()],
        xerr=[0, baseline.std(), distilled.std()], color=["grey", "tab:blue", "tab:orange"])
ax.set_xlim(0, 1)
ax.set_xlabel("test accuracy after 10 steps (10 θ0 draws)")
fig.tight_layout()

# %%
# Decode the compressed representation
# ------------------------------------
# :meth:`~skdistill.DatasetDistiller.train_model` replays the recipe from one θ0 draw and
# returns the trained :class:`torch.nn.Module`; no real image is involved.
net = distiller.train_model(random_state=2)
with torch.no_grad():
    predicted = distiller.classes_[net(torch.as_tensor(X_test)).argmax(1).numpy()]
print(f"one decoded network: test accuracy {np.mean(predicted == y_test):.3f}")
