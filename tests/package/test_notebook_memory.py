"""notebooks/02_memory.ipynb (memory) runs top to bottom on CPU (own file: xdist spreads the notebooks)."""

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from notebook_runner import run_notebook


def test_memory_notebook_runs(monkeypatch, tmp_path):
    run_notebook("02_memory.ipynb", monkeypatch, tmp_path)
