"""The native CPU kernels' float loops are vectorised in every instruction-set clone.

The hot loops are compiled per instruction set with GCC's target_clones (see
csrc/ops/cpu/cpu_utils.h). A loop GCC cannot vectorise still compiles and still computes
the right numbers, so the equality tests cannot see it; it only runs several times slower.
That happened: fast_exp's clamps kept every clone below AVX-512 scalar, and on an AVX2
CPU the native couplings ran at 0.25x the eager reference. So this reads the built
library's machine code: each ``*_f32`` clone must do its float arithmetic on packed
registers (ymm for the x86-64-v3 clone, xmm for the baseline one).
"""

from __future__ import annotations

import platform
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from ainn_fast import native

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() != "x86_64", reason="target_clones are built on x86-64 Linux"
)

# Packed single-precision arithmetic: (v)addps, mulps, divps, minps, maxps, subps and the FMAs.
_PACKED = re.compile(r"\s(?:v?(?:add|sub|mul|div|min|max)ps|vfn?m(?:add|sub)\d{3}ps)\s+\S*%(?P<reg>[xyz]mm)")
_CLONE = re.compile(r"^[0-9a-f]+ <.*::(?P<name>\w+_f32)\(.*\[clone \.(?P<clone>\w+)\]>:$")


def _loaded_library() -> Path:
    reason = native.load()
    if reason is not None:
        pytest.fail(f"the native extension is part of every install: {reason}")
    # Match the library load() used exactly: other test libraries (the CUDA emulation's
    # ainn_fast_cuda_emulation.so) may be mapped into this process too.
    if native.extension_origin() == "ainn_fast._C":
        import ainn_fast._C

        return Path(ainn_fast._C.__file__).resolve()
    for line in Path("/proc/self/maps").read_text().splitlines():
        path = line.split()[-1]
        if Path(path).name in ("ainn_fast_native.so", "ainn_fast_native_cuda.so"):
            return Path(path)
    raise AssertionError(f"the native extension is loaded ({native.extension_origin()}) but its library is not mapped")


def _packed_registers_per_clone(library: Path) -> dict[tuple[str, str], set[str]]:
    if shutil.which("objdump") is None:
        pytest.skip("objdump (binutils) is not installed")
    listing = subprocess.run(
        ["objdump", "-d", "-C", "--no-show-raw-insn", str(library)], capture_output=True, text=True, check=True
    ).stdout
    found: dict[tuple[str, str], set[str]] = {}
    current = None
    for line in listing.splitlines():
        head = _CLONE.match(line)
        if head:
            current = found.setdefault((head["name"], head["clone"]), set())
        elif not line.strip():
            current = None
        elif current is not None:
            current.update(m["reg"] for m in _PACKED.finditer(line))
    return found


def test_float_loops_are_vectorised_in_every_clone():
    clones = _packed_registers_per_clone(_loaded_library())
    names = {name for name, _ in clones}
    # Not vacuous: the coupling kernels (the training and decoding hot spots) must be there.
    assert {"forward_f32", "backward_f32", "blend_f32"} <= names, f"clones found: {sorted(clones)}"
    avx2 = "arch_x86_64_v3" if any(c == "arch_x86_64_v3" for _, c in clones) else "avx2"  # GCC >= 12, or older
    for name in sorted(names):
        for clone, register in ((avx2, "ymm"), ("default", "xmm")):
            assert (name, clone) in clones, f"{name} has no {clone} clone (found {sorted(c for n, c in clones if n == name)})"
            assert register in clones[name, clone], f"{name} [{clone}] does no packed float arithmetic on {register}: not vectorised"
