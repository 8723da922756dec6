"""allocator.reuse_freed_memory: big blocks come from the heap, not from mmap, and only the
``ainn`` script asks for it."""

from __future__ import annotations

import platform

import pytest

from ainn_fast import allocator, cli
from conftest import run_python

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Bytes glibc holds in mmapped blocks (mallinfo2's hblkhd) after allocating 64 MiB through
# torch, in a fresh interpreter, with or without the tuning.
_PROBE = """
import ctypes, torch
from ainn_fast import allocator
tuned = {tune} and allocator.reuse_freed_memory()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
mallinfo2.restype = Info
before = mallinfo2().hblkhd
x = torch.empty(16 * 2**20)  # 64 MiB, above any mmap threshold glibc would pick
print(tuned, mallinfo2().hblkhd - before)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_big_tensors_come_from_the_heap_once_tuned():
    untuned, mapped = run_python(_PROBE.format(tune=False), None)[-1].split()
    assert untuned == "False" and int(mapped) >= 64 * 2**20  # the control: glibc maps it
    tuned, mapped = run_python(_PROBE.format(tune=True), None)[-1].split()
    assert tuned == "True" and int(mapped) == 0


def test_only_the_script_tunes(monkeypatch, capsys, tmp_path):
    calls = []
    monkeypatch.setattr(allocator, "reuse_freed_memory", lambda: calls.append(1) or True)
    missing = str(tmp_path / "missing.ainn")
    assert cli.main(["info", missing]) == 2  # in-process (tests, Python callers): never
    assert calls == []
    monkeypatch.setattr("sys.argv", ["ainn", "info", missing])
    assert cli.script_main() == 2
    assert calls == [1]
    capsys.readouterr()
