"""Sphinx configuration of geomlat's documentation (``make docs``; ``make docs-fast`` skips the gallery runs).

Offline by design: the build machine and CI may reach no documentation site, so intersphinx reads the
inventories shipped in ``docs/_inventories/`` (written by ``docs/_inventories/build.py`` for the external
names the docstrings use: PyTorch, PyG, PyGSP, NumPy, SciPy, scikit-learn, Python) and falls back to the
published one only when online. (Debian's ``python-scipy-doc`` ships SciPy's full inventory, but no Debian
package has PyTorch's, PyG's or PyGSP's, and the runtime module paths autodoc writes, such as
``scipy.sparse._csr.csr_matrix``, are in no published inventory: the shipped ones list them as aliases.)
"""
import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MPLBACKEND", "Agg")
# the gallery's Lightning example writes its CSV logs here, not into examples/
os.environ.setdefault("GEOMLAT_EXAMPLE_LOGS", os.path.join(os.environ.get("TMPDIR", "/tmp"), "geomlat-docs-logs"))

import geomlat  # noqa: E402

project = "geomlat"
author = "geomlat authors"
copyright = "2025, geomlat authors"
release = version = geomlat.__version__

sys.path.insert(0, str(DOCS / "_ext"))
extensions = [
    "geomlat_api",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_inventories", "_ext", "auto_examples/*.ipynb", "auto_examples/*.py", "**.zip"]
root_doc = "index"
nitpicky = True

# -- autodoc / napoleon ---------------------------------------------------------------------------------------
autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_inherit_docstrings = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_preprocess_types = True
python_use_unqualified_type_names = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# -- intersphinx: shipped inventories (offline), then the live ones ---------------------------------------------
INV = DOCS / "_inventories"


def _inventory(name: str):
    return (str(INV / f"{name}.inv"),)


intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", _inventory("python")),
    "torch": ("https://docs.pytorch.org/docs/stable/", _inventory("torch")),
    "torch_geometric": ("https://pytorch-geometric.readthedocs.io/en/latest/", _inventory("torch_geometric")),
    "pygsp": ("https://pygsp.readthedocs.io/en/stable/", _inventory("pygsp")),
    "numpy": ("https://numpy.org/doc/stable/", _inventory("numpy")),
    "scipy": ("https://docs.scipy.org/doc/scipy/", _inventory("scipy")),
    "sklearn": ("https://scikit-learn.org/stable/", _inventory("sklearn")),
    "matplotlib": ("https://matplotlib.org/stable/", _inventory("matplotlib")),
    "lightning": ("https://lightning.ai/docs/pytorch/stable/", _inventory("lightning")),
}
intersphinx_timeout = 5

# -- sphinx-gallery --------------------------------------------------------------------------------------------
# Every example runs at build time on the CPU (small sizes, each under a minute), except torchdistill's
# training box, which needs a torchvision that imports beside the installed torch (shown, not run).
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"(plot_|plain_loop|lightning_distill)",
    "ignore_pattern": r"(__init__|conftest)\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "reset_modules": ("matplotlib",),
    "show_memory": False,
}
if os.environ.get("GEOMLAT_DOCS_FAST"):
    sphinx_gallery_conf["plot_gallery"] = "False"

# -- HTML ------------------------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"geomlat {release}"
html_static_path = ["_static"]
html_show_sourcelink = False

# External names that no shipped inventory documents (private helpers of other libraries, typing aliases
# that render as text). Each is listed on purpose; anything else unresolved fails the build.
nitpick_ignore = []
nitpick_ignore_regex = []
