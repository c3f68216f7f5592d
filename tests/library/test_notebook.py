"""The example notebook runs top to bottom (examples/search_own_cnn.ipynb)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "examples" / "search_own_cnn.ipynb"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_notebook_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    nbformat = pytest.importorskip("nbformat", reason="nbformat is in the dev extras "
                                   "(pip install -e '.[dev]')")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is in the dev extras")
    pytest.importorskip("ipykernel", reason="ipykernel is in the dev extras")
    from jupyter_client.kernelspec import KernelSpecManager  # noqa: F401 - comes with nbclient

    monkeypatch.setenv("ACTSEARCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # This interpreter's kernel, whatever kernels the machine has installed.
    client = nbclient.NotebookClient(nb, timeout=540, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.kernel_manager_class = _this_python_kernel()
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    text = "".join(str(o.get("data", {}).get("text/plain", "")) + str(o.get("text", ""))
                   for o in outputs)
    assert "SearchResult search" in text and "complete" in text
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the winner's curves


def _this_python_kernel() -> type:
    from jupyter_client.manager import KernelManager

    class ThisPython(KernelManager):
        """Starts ipykernel with this test's interpreter (not whatever 'python3' is on PATH)."""

        def format_kernel_cmd(self, extra_arguments: list[str] | None = None) -> list[str]:
            return [sys.executable, "-m", "ipykernel_launcher", "-f", self.connection_file]

    return ThisPython
