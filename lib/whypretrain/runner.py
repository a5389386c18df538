"""Transition only: the names that notebooks and tests written before the split import from
``whypretrain.runner``. Delete this file once ``notebooks/*.ipynb`` call
``notebook.notebook_params`` and ``tests/test_study.py`` uses ``cli.study`` / ``book`` /
``assets``. Where each job lives now:

- ``notebook.py``: ``notebook_params``, what a notebook calls after its parameters cell;
- ``execute.py``: papermill execution of the book's notebooks (hash skip, provenance);
- ``assets.py``: the book's offline JavaScript from npm;
- ``book.py``: the book's layout, its status page and the jupyter-book build;
- ``cli.py``: the ``whypretrain`` command, including ``study`` and ``book``.
"""
from .assets import ASSETS, ensure_assets  # noqa: F401
from .book import EXPERIMENTS, NOTEBOOKS, BuildError, build_book, find_root, notebook_list  # noqa: F401
from .cli import book as run_book, study  # noqa: F401
from .errors import ParameterError  # noqa: F401
from .execute import NotebookError, execute_notebooks, notebook_hash  # noqa: F401
from .notebook import notebook_params  # noqa: F401
