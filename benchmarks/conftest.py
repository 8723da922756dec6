"""Benchmark session settings: real GPU kernels only, and the device named in the JSON."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # The Triton interpreter would "benchmark" numpy on the CPU.
    if os.environ.get("TRITON_INTERPRET") == "1":
        skip = pytest.mark.skip(reason="unset TRITON_INTERPRET to benchmark real kernels")
        for item in items:
            item.add_marker(skip)


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["torch"] = torch.__version__
    try:
        import triton

        machine_info["triton"] = triton.__version__
    except ImportError:
        machine_info["triton"] = None
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        machine_info["gpu"] = props.name
        machine_info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        machine_info["cuda"] = torch.version.cuda
    machine_info["tf32_conv"] = torch.backends.cudnn.allow_tf32
