"""The notebooks in ``notebooks/``: which exist, committed without outputs, and each executed
top to bottom on CPU (``tests/notebook_runner.py``) so they never rot.

One test file per notebook so that pytest-xdist (``--dist loadfile``) can run them on
different workers. The notebooks use reduced sizes (about a minute each on 2 cores).
"""

import pathlib

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_notebooks_exist():
    names = [p.name for p in NOTEBOOKS]
    assert names == ["01_quickstart.ipynb", "02_memory.ipynb", "03_models.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_without_outputs(path):
    book = nbformat.read(path, as_version=4)
    nbformat.validate(book)
    for cell in book.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, (
                f"{path.name} was committed with outputs; clear them (Kernel > Restart & Clear "
                "Output, or `jupyter nbconvert --clear-output --inplace`) before committing")


def test_quickstart_runs(monkeypatch, tmp_path):
    from notebook_runner import run_notebook

    run_notebook("01_quickstart.ipynb", monkeypatch, tmp_path)


def test_a_failing_cell_fails_the_run(monkeypatch, tmp_path):
    """The runner really executes: a cell that raises (after one that imports the checkout)
    makes it fail."""
    from nbformat.v4 import new_code_cell, new_notebook
    from notebook_runner import run_notebook

    path = tmp_path / "broken.ipynb"
    nbformat.write(new_notebook(cells=[
        new_code_cell("import revsnn_jax, pathlib\n"
                      "assert pathlib.Path(revsnn_jax.__file__).resolve().parents[1] == "
                      f"pathlib.Path({str(ROOT)!r})"),
        new_code_cell("raise ValueError('boom')")]), path)
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="boom"):
        run_notebook(path, monkeypatch, tmp_path)
