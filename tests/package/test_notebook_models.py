"""notebooks/03_models.ipynb (models tour) runs top to bottom on CPU (own file: xdist spreads the notebooks)."""

import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from notebook_runner import run_notebook


def test_models_notebook_runs(monkeypatch, tmp_path):
    run_notebook("03_models.ipynb", monkeypatch, tmp_path)
