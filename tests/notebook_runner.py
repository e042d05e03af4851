"""Run one notebook top to bottom in a fresh ipykernel (helper of the notebook tests).

The kernel runs the interpreter running the tests, with ``PYTHONPATH`` at this checkout (the
notebooks import the code under test), ``MPLBACKEND=Agg`` and the suite's XLA flags; its
working directory is a temporary one, so nothing is written into the repository. Any cell
error raises ``nbclient.exceptions.CellExecutionError`` naming the cell.
"""

import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CELL_TIMEOUT_S = 600


def run_notebook(name: str | pathlib.Path, monkeypatch, tmp_path) -> None:
    """Execute ``notebooks/<name>`` (or the notebook at path ``name``) in a fresh kernel."""
    import nbclient
    import nbformat
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    # the kernel inherits this process's environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "mpl"))

    class ThisInterpreter(KernelSpecManager):
        """The kernel runs ``sys.executable`` (the interpreter running the tests)."""

        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"],
                              display_name="tests", language="python")

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.kernel_spec_manager = ThisInterpreter()

    book = nbformat.read(NOTEBOOK_DIR / name, as_version=4)  # an absolute path stays as is
    client = nbclient.NotebookClient(book, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}},
                                     kernel_manager_class=Manager)
    client.execute()  # raises CellExecutionError on the first failing cell
    errors = [out for cell in book.cells if cell.cell_type == "code"
              for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    assert not errors, errors
