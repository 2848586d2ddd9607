"""Execute both analysis notebooks with nbclient (small bootstrap counts, synthetic sweep)."""

import os
from pathlib import Path

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

NB_DIR = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.mark.parametrize("name", [pytest.param("reproduce_chinchilla.ipynb", marks=pytest.mark.slow),
                                  pytest.param("sweep_scaling_laws.ipynb", marks=pytest.mark.slow),
                                  "reproduce_scaling.ipynb",
                                  "abilities_from_loss.ipynb"])
def test_notebook_runs(name, tmp_path, monkeypatch):
    monkeypatch.setenv("BOOTSTRAP", "30")
    monkeypatch.setenv("PLOT_DIR", str(tmp_path / "plots"))
    monkeypatch.delenv("SWEEP_DIR", raising=False)  # use the synthetic fallback sweep
    nb = nbformat.read(NB_DIR / name, as_version=4)
    # run in notebooks/ so the notebook's sys.path tweak finds the package
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(NB_DIR)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
