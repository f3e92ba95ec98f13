"""The notebooks run as written (in their SMOKE setting): a notebook that rots is worse than none."""
import json
import os

import matplotlib
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def notebook_code(name: str) -> str:
  with open(os.path.join(ROOT, "notebooks", name), encoding="utf-8") as f:
    cells = json.load(f)["cells"]
  return "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.slow
def test_r1_zero_toy_notebook(tmp_path, monkeypatch):
  code = notebook_code("r1_zero_toy.ipynb")
  for old, new in (("SMOKE = False", "SMOKE = True"),
                   ('WORKDIR = "workdirs/notebook"', f"WORKDIR = {str(tmp_path)!r}")):
    assert code.count(old) == 1, old
    code = code.replace(old, new)
  monkeypatch.setenv("R1JAX_DATA_DIR", str(tmp_path / "data"))
  monkeypatch.chdir(os.path.join(ROOT, "notebooks"))  # as Jupyter starts it
  matplotlib.use("Agg")
  scope = {"__name__": "__notebook__"}
  exec(compile(code, "r1_zero_toy.ipynb", "exec"), scope)  # noqa: S102
  assert os.getcwd() == ROOT
  assert 0.0 <= scope["summary"]["pass@1"] <= 1.0
  assert scope["summary"]["num_problems"] == 16
  assert [r["step"] for r in scope["records"] if "eval/pass@1" in r] == [0, 2]
  assert len(scope["samples"]) == 16
