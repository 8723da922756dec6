"""The install layout: kernels/ is importable as ainn_fast.kernels; CI reads the README."""

import importlib
import importlib.util
import subprocess
from pathlib import Path

from conftest import run_python

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
    # Importing must not need a GPU or the native extension. The Triton kernels register
    # on import when triton is installed, but run on CPU only under TRITON_INTERPRET=1.
    code = (
        "import ainn_fast, ainn_fast.zoo, ainn_fast.convert; from ainn_fast.backend import unavailable_reason\n"
        "print(ainn_fast.available_backends('cpu'))\n"
        "print(unavailable_reason('triton', 'cpu'))\n"
        "print(unavailable_reason('native', 'cpu'))"
    )
    backends, triton_reason, native_reason = run_python(code, None)
    native = native_reason == "None"  # built (setup.py or cached JIT) or not: both valid
    assert backends == ("['reference', 'native']" if native else "['reference']")
    if importlib.util.find_spec("triton") is not None:
        assert triton_reason == "Triton runs on CPU tensors only with TRITON_INTERPRET=1"
    else:
        assert "not part of this build" in triton_reason
    assert native or "native" in native_reason


def test_triton_backend_is_available_on_cpu_under_the_interpreter():
    if importlib.util.find_spec("triton") is None:
        return
    code = "import ainn_fast; print(ainn_fast.available_backends('cpu'))"
    assert run_python(code, "1")[0] in ("['reference', 'triton']", "['reference', 'triton', 'native']")


def test_the_readme_ainn_commands_parse():
    """Every complete ``ainn ...`` command line in the README's code blocks (not the
    synopses with [options]) is one the command line accepts, so the README cannot drift
    from the options."""
    import re
    import shlex

    from ainn_fast.cli import _build_parser

    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", readme, flags=re.M | re.S)
    lines = [ln.split(" #")[0].strip() for block in blocks for ln in block.splitlines()]
    commands = [shlex.split(ln)[1:] for ln in lines if re.match(r"(\.venv/bin/)?ainn ", ln) and "[" not in ln]
    assert len(commands) >= 4, commands
    for argv in commands:
        _build_parser().parse_args(argv)  # argparse exits (a failure here) on an unknown option
