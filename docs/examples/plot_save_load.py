"""
Save and load the compressed representation
===========================================

A fitted :class:`~skdistill.DatasetDistiller` *is* the compressed representation of its
training set: the architecture, the distribution of initial weights, the learned step sizes
and the synthetic set. :meth:`~skdistill.DatasetDistiller.save` writes all of it to one
file; :meth:`~skdistill.DatasetDistiller.load` restores an estimator that scores and trains
networks exactly as the original does.
"""

# %%
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np

from skdistill import DatasetDistiller, load_digits_images
from skdistill.plotting import plot_distilled

data = load_digits_images()
X_train, y_train, X_test, y_test = data.X_train, data.y_train, data.X_test, data.y_test
distiller = DatasetDistiller(n_distilled=20, max_iter=200, random_state=0).fit(X_train, y_train)

folder = tempfile.mkdtemp()
path = os.path.join(folder, "digits.skd")
distiller.save(path)
print(f"digits.skd: {os.path.getsize(path) / 1024:.1f} KiB, against "
      f"{X_train.astype(np.float32).nbytes / 1024:.1f} KiB of float32 training images")

# %%
# What the file holds
# -------------------
# A zip archive: a JSON manifest (readable without skdistill) and the tensors, stored so
# that loading unpickles no arbitrary object for the built-in modules.
with zipfile.ZipFile(path) as archive:
    for member in archive.infolist():
        print(f"{member.filename:16s} {member.file_size:8d} bytes")
    manifest = json.loads(archive.read("manifest.json"))
print("top-level keys of the manifest:", sorted(manifest))

# %%
# Load and check
# --------------
# ``score`` and ``evaluate`` draw the same θ0 and give the same numbers; ``train_model``
# decodes the same network.
restored = DatasetDistiller.load(path)
print(f"score: original {distiller.score(X_test, y_test):.4f}, "
      f"restored {restored.score(X_test, y_test):.4f}")
print("same synthetic set:", np.array_equal(distiller.distilled_X_, restored.distilled_X_))
print("same step sizes:   ", np.array_equal(distiller.learned_lr_, restored.learned_lr_))
left = distiller.train_model(random_state=3).state_dict()
right = restored.train_model(random_state=3).state_dict()
print("same decoded network:", all((left[k] == right[k]).all().item() for k in left))

# %%
# The restored estimator is a full estimator: its images plot, and with
# ``warm_start=True`` its fit continues from the saved synthetic set and step sizes (with
# fresh optimiser moments).
plot_distilled(restored)

shutil.rmtree(folder)
