"""
Run on a GPU
============

``device="auto"`` (the default) fits on CUDA when PyTorch sees a GPU and on the CPU
otherwise; nothing else in the code changes. Fitted attributes are NumPy arrays and
decoded networks are CPU modules wherever the fit ran, so results move freely between
machines.

The documentation is built on a machine without a GPU: the output below says which device
the fit actually used.
"""

# %%
import time

import torch

from skdistill import DatasetDistiller, load_digits_images
from skdistill.plotting import plot_learning_curve

data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test

if torch.cuda.is_available():
    print("CUDA is available:", torch.cuda.get_device_name(0))
else:
    print("no CUDA device here: device='auto' runs on the CPU")

# %%
# Fit with ``device="auto"``
# --------------------------
# On a GPU the θ0 draws of an iteration are unrolled together (batched matrix products for
# the built-in MLP, ``torch.vmap`` for other modules; on the CPU, convolutional modules loop
# over the draws instead, which is faster there). ``precision="bfloat16"`` runs the
# meta-gradient under bf16 autocast, which pays off on recent GPUs; it is used here only
# when a GPU is present.
precision = "bfloat16" if torch.cuda.is_available() else "float32"
distiller = DatasetDistiller(n_distilled=10, max_iter=200, device="auto",
                             precision=precision, random_state=0)
start = time.perf_counter()
distiller.fit(X_train, y_train)
seconds = time.perf_counter() - start
print(f"fitted on {distiller.device_} ({precision}) in {seconds:.1f} s, "
      f"{1000 * seconds / distiller.n_iter_:.0f} ms per outer iteration")
print(f"test accuracy of the learned recipe: {distiller.score(X_test, y_test):.3f}")

# %%
# Wherever the fit ran, the results live on the CPU
# -------------------------------------------------
net = distiller.train_model(random_state=0)
print(f"distilled_X_ is a {type(distiller.distilled_X_).__name__}; "
      f"the decoded network is on {next(net.parameters()).device}")

# %%
# Asking for a device that is not there
# -------------------------------------
# An explicit ``device="cuda"`` on a machine without CUDA is an error at ``fit`` time, with
# the way out in the message; ``"auto"`` is the portable choice.
if not torch.cuda.is_available():
    try:
        DatasetDistiller(max_iter=1, device="cuda").fit(X_train, y_train)
    except ValueError as error:
        print("ValueError:", error)

# %%
plot_learning_curve(distiller)
