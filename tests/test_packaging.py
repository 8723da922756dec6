"""The install layout: kernels/ is importable as ainn_fast.kernels; CI reads the README."""

import importlib
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_kernels_install_as_a_subpackage():
    kernels = importlib.import_module("ainn_fast.kernels")
    assert Path(kernels.__file__).resolve().parent == ROOT / "kernels"


def test_ci_runs_the_readme_commands():
    script = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "<!-- ci:setup -->" in readme and "<!-- ci:test -->" in readme
    assert "readme_command setup" in script and "readme_command test" in script
    # The extraction itself: the command printed is the README's line.
    cmd = (
        "source <(sed -n '/^readme_command()/,/^}/p' .ci/run) && readme_command setup && readme_command test"
        " && readme_command main"
    )
    out = subprocess.run(["bash", "-c", cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("python3.11 -m venv .venv") and "constraints.txt" in out[0]
    assert out[1] == ".venv/bin/python -m pytest -q"
    assert out[2] == ".venv/bin/ainn demo"


def test_package_imports_without_side_effects():
    # Importing must not need a GPU, Triton kernels or the native extension.
    code = "import ainn_fast, ainn_fast.zoo, ainn_fast.convert; print(ainn_fast.available_backends('cpu'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "['reference']"
