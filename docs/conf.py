"""Sphinx configuration of the skdistill documentation.

Build (from the repository root):
``python -m sphinx -W --keep-going -b html docs docs/_build/html``
or ``make -C docs html``. The gallery examples in ``docs/examples/`` run during the build.
"""

import json
import os
import re
from datetime import date
from pathlib import Path

# The networks of the examples are tiny: one thread is faster than several on a shared
# machine. Set before torch is imported (by autodoc or the first example).
os.environ.setdefault("OMP_NUM_THREADS", "1")

from sphinx_gallery.sorting import ExplicitOrder  # noqa: E402

import skdistill  # noqa: E402  (after the thread setting)

project = "skdistill"
author = "the skdistill developers"
copyright = f"{date.today().year}, {author}"
release = skdistill.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "snippets", "examples"]
templates_path = ["_templates"]
default_role = "literal"

# --------------------------------------------------------------------- API reference

autosummary_generate = True
autodoc_default_options = {"members": True, "inherited-members": False}
autodoc_member_order = "bysource"
# numpydoc renders Parameters/Attributes; the class template lists the methods itself.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True

# scikit-learn adds ``set_<method>_request`` to every estimator whose methods take metadata
# (``score(sample_weight=...)``); their docstrings point at scikit-learn's own user guide.
_METADATA_REQUEST = re.compile(r"^set_\w+_request$")


def _skip_member(app, what, name, obj, skip, options):
    if _METADATA_REQUEST.match(name):
        return True
    return skip


# In the type of a numpydoc entry, ``shape (n_features_in_,)`` names an attribute, but reST
# reads a word ending in "_" as a hyperlink reference (an error under -W). Quote such words
# before numpydoc renders the entry; a docstring that already quotes them is left as it is.
_ENTRY = re.compile(r"^(\s*[\w*, ]+ : )(.+)$")
_TRAILING_UNDERSCORE = re.compile(r"(?<![`\w])(\w+_)(?![`\w])")


def _quote_attribute_names(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        entry = _ENTRY.match(line)
        if entry:
            lines[i] = entry[1] + _TRAILING_UNDERSCORE.sub(r"`\1`", entry[2])


def setup(app):
    app.connect("autodoc-skip-member", _skip_member)
    # before numpydoc (priority 500), which turns the entries into definition lists
    app.connect("autodoc-process-docstring", _quote_attribute_names, priority=400)


# --------------------------------------------------------------------- benchmark tables

# The user guide quotes the committed results of benchmarks/accuracy.py, rendered from its
# JSON files at every build so that the pages never disagree with them.
_DOCS = Path(__file__).resolve().parent
_RESULTS = "benchmarks/results"
_BENCHMARKS = [
    ("accuracy_digits.json", "Digits"),
    ("accuracy_fashion_mnist.json", "Fashion-MNIST"),
    ("accuracy_fashion_mnist_convnet_literature.json",
     "Fashion-MNIST, ConvNet, the literature's protocol 2"),
]
_METHOD_NAMES = {"distilled": "distilled (DatasetDistiller)", "random": "random real",
                 "means": "class means", "kmeans": "k-means centres", "herding": "herding",
                 "kcenter": "k-center greedy"}


def _results_dir():
    """benchmarks/results of this checkout, else of the checkout skdistill is installed from."""
    for root in (_DOCS.parent, Path(skdistill.__file__).resolve().parents[1]):
        if (root / _RESULTS).is_dir():
            return root / _RESULTS
    return None


def _mean_std(values):
    mean = 100 * sum(values) / len(values)
    std = (sum((100 * v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return mean, f"{mean:.1f} ± {std:.1f}"


def _benchmark_table(path, title):
    data = json.loads(path.read_text(encoding="utf-8"))
    meta, config = data["meta"], data["config"]
    lines = []
    for block in data["results"].values():
        info = block["info"]
        shape = "×".join(str(n) for n in info["image_shape"][1:])
        lines += [
            f".. list-table:: {title}: {info['n_train']:,} training / {info['n_test']:,} test "
            f"images of {shape}; test accuracy in %",
            "   :header-rows: 1",
            "   :widths: 34 12 22 22 10",
            "",
            "   * - method",
            "     - images per class",
            "     - 1: learned recipe / constant-step GD",
            "     - 2: standard training",
            "     - time to build (s)",
        ]
        rows = [(r, _mean_std(r["learned_recipe"]), _mean_std(r["standard_training"]))
                for r in block["records"]]
        for ipc in sorted({r["ipc"] for r, _, _ in rows}):
            group = [row for row in rows if row[0]["ipc"] == ipc]
            best1 = max(p1[0] for _, p1, _ in group)
            best2 = max(p2[0] for _, _, p2 in group)
            for record, (m1, t1), (m2, t2) in group:
                lines += [
                    f"   * - {_METHOD_NAMES.get(record['method'], record['method'])}",
                    f"     - {ipc}",
                    f"     - **{t1}**" if m1 == best1 else f"     - {t1}",
                    f"     - **{t2}**" if m2 == best2 else f"     - {t2}",
                    f"     - {record['fit_seconds']:.2f}",
                ]
        lines += [
            "",
            f"``{meta['command']}``: module ``{config['module']}``{_params(config, 'module')}, "
            f"``max_iter={config['max_iter']}``, ``n_steps={config['n_steps']}``, selectors' "
            f"constant step ``inner_lr={config['inner_lr']}``, standard training of "
            f"{_protocol_2_network(config)} with {_optimizer(config)} (lr {config['lr']}, "
            f"{config['epochs']} epochs); mean ± std over {config['n_inits']} θ0 draws or "
            f"training runs of one fitted set per method, seed {config['seed']}; "
            f"{meta['device']}; git ``{meta['git_commit']}``, {meta['date'][:10]}. "
            "Bold: the best of each block by each protocol.",
            "",
        ]
    return lines


def _params(config, key):
    params = config.get(f"{key}_params")
    return f" ``{json.dumps(params)}``" if params else ""


def _protocol_2_network(config):
    # results written before --eval-module existed trained the distiller's network
    module = config.get("eval_module", config["module"])
    params = config.get("eval_module_params", config.get("module_params"))
    if (module, params) == (config["module"], config.get("module_params")):
        return "the same network"
    return f"``{module}``" + (f" ``{json.dumps(params)}``" if params else " (default size)")


def _optimizer(config):
    name = {"adam": "Adam", "sgd": "SGD"}[config.get("optimizer", "adam")]
    extra = config.get("optimizer_params")
    return name + (f" ``{json.dumps(extra)}``" if extra else "")


def _write_benchmark_tables():
    results = _results_dir()
    lines = []
    for name, title in _BENCHMARKS:
        if results is not None and (results / name).is_file():
            lines += _benchmark_table(results / name, title)
        else:
            lines += [
                f".. note:: ``{_RESULTS}/{name}`` was not found when this page was built.",
                "",
            ]
    target = _DOCS / "user_guide" / "benchmark_results.inc"
    text = "\n".join(lines)
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")


_write_benchmark_tables()

# --------------------------------------------------------------------- gallery

_EXAMPLES = [
    "plot_distill_digits.py",
    "plot_compare_coresets.py",
    "plot_pipeline_gridsearch.py",
    "plot_pretrained_adaptation.py",
    "plot_poisoning.py",
    "plot_save_load.py",
    "plot_gpu.py",
    "*",
]

sphinx_gallery_conf = {
    "examples_dirs": "examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "within_subsection_order": ExplicitOrder(_EXAMPLES),
    "doc_module": ("skdistill",),
    "backreferences_dir": "gen_modules/backreferences",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "matplotlib_animations": False,
}

# --------------------------------------------------------------------- HTML

try:
    import pydata_sphinx_theme  # noqa: F401
except ImportError:  # the `docs` extra installs it; Sphinx's own theme otherwise
    html_theme, html_theme_options = "alabaster", {}
else:
    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        "secondary_sidebar_items": ["page-toc"],
    }
html_title = f"skdistill {release}"
html_static_path = []
html_show_sourcelink = False
