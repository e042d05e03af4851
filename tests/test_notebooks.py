"""Execute every notebook in ``notebooks/`` top to bottom on CPU, so they never rot.

Each notebook runs in a fresh ipykernel started with the interpreter running the tests, with
``PYTHONPATH`` at this checkout (the notebooks import the code under test), ``MPLBACKEND=Agg``
and the suite's XLA flags. Any cell error fails the test (nbclient raises
``CellExecutionError`` naming the cell). The notebooks use reduced sizes and take well under
two minutes each on a loaded 2-core CPU.
"""

import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT_S = 600


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


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, monkeypatch, tmp_path):
    # the kernel inherits this process's environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))
    book = nbformat.read(path, as_version=4)
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

    class ThisInterpreter(KernelSpecManager):
        """The kernel runs ``sys.executable`` (the interpreter running the tests)."""

        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name="tests", language="python")

    client = nbclient.NotebookClient(
        book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},  # cwd: nothing written in the repo
        kernel_manager_class=_manager_class(ThisInterpreter))
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [out for cell in book.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors


def _manager_class(spec_manager_class):
    from jupyter_client.manager import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.kernel_spec_manager = spec_manager_class()

    return Manager
