"""The documentation builds with warnings as errors, covers the public API and draws its
figures.

One build (a few minutes: the gallery examples run) in a temporary copy of ``docs/``, shared
by the tests below. Skipped when the ``docs`` extra (Sphinx, numpydoc, sphinx-gallery) is not
installed.
"""

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import skdistill

pytest.importorskip("sphinx")
pytest.importorskip("numpydoc")
pytest.importorskip("sphinx_gallery")
pytest.importorskip("matplotlib")
pytest.importorskip("imblearn")  # the Pipeline example

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parent.parent / "docs"
# Written by a build into the source tree; never copied into the test's build.
GENERATED = ("_build", "auto_examples", "gen_modules", "sg_execution_times.rst")


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory):
    """``sphinx -W --keep-going -b html`` on a copy of docs/; returns the HTML folder."""
    root = tmp_path_factory.mktemp("docs")
    source = root / "source"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns(*GENERATED))
    html = root / "html"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q",
         "-d", str(root / "doctrees"), str(source), str(html)],
        capture_output=True, text=True, env=env, cwd=root, check=False,
    )
    assert result.returncode == 0, (
        f"sphinx-build failed ({result.returncode}):\n{result.stderr[-8000:]}"
    )
    return html


def _api_names():
    """``skdistill.__all__`` plus the public names of the plotting and nets modules."""
    names = [f"skdistill.{name}" for name in skdistill.__all__]
    names += ["skdistill.plotting.plot_distilled", "skdistill.plotting.plot_learning_curve",
              "skdistill.nets.MLP", "skdistill.nets.LeNet", "skdistill.nets.ConvNet"]
    return names


def _example_scripts():
    return sorted(p.name for p in (DOCS / "examples").glob("plot_*.py"))


def test_every_public_name_has_an_api_entry(built_docs):
    api = (built_docs / "api.html").read_text(encoding="utf-8")
    pages = {p.stem for p in (built_docs / "gen_modules").glob("*.html")}
    for name in _api_names():
        # each object is an anchor (id) of the API pages, and a class or function has a page
        assert f'id="{name}"' in api or name in pages, f"{name} is not in the API reference"
        if name != "skdistill.__version__":
            assert name in pages, f"{name} has no page under gen_modules/"
            page = (built_docs / "gen_modules" / f"{name}.html").read_text(encoding="utf-8")
            assert f'id="{name}"' in page, f"{name}'s page does not document it"


def test_every_gallery_example_draws_its_figures(built_docs):
    scripts = _example_scripts()
    assert len(scripts) >= 7
    images = built_docs / "_images"
    for script in scripts:
        stem = Path(script).stem
        figures = sorted(images.glob(f"sphx_glr_{stem}_[0-9][0-9][0-9].png"))
        assert figures, f"the gallery has no figure of {script}"
        assert all(f.stat().st_size > 1000 for f in figures), f"an empty figure in {script}"
        assert (built_docs / "auto_examples" / f"{stem}.html").is_file()


def test_user_guide_pages_are_built(built_docs):
    for page in ("introduction", "algorithm", "model_init", "evaluation", "workflows",
                 "practical", "limits", "distributed", "install"):
        assert (built_docs / "user_guide" / f"{page}.html").is_file(), page


def test_gallery_examples_use_only_public_names():
    """Examples teach the public API: no import of a private module of skdistill."""
    for script in _example_scripts():
        tree = ast.parse((DOCS / "examples" / script).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("skdistill"):
                assert not any(part.startswith("_") for part in node.module.split(".")), (
                    f"{script} imports the private module {node.module}"
                )
