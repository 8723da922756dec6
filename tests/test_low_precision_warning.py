"""bf16/fp16 on a CPU where they run slower than float32 warns instead of silently losing
time: where oneDNN has no kernels for them (measured 6-10x slower on an AVX2 CPU) and where
it has AVX-512 ones but the CPU has no AMX (measured 1.3-2x slower on a Xeon VM without AMX
flags); the ainn command prints warnings as one line each, like its errors."""

import warnings

import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import cli, hardware, zoo
from ainn_fast.inference import prepare_for_decoding
from ainn_fast.training import TrainConfig, Trainer


# (oneDNN has bf16/fp16 kernels, the CPU has AMX tiles); None: this torch cannot say.
CPUS = {"no-onednn": (False, True), "no-amx": (True, False), "amx": (True, True), "unknown-amx": (True, None)}
FAST = {"amx", "unknown-amx"}  # no warning without evidence of slowness


@pytest.fixture(params=list(CPUS))
def cpu(request, monkeypatch) -> str:
    onednn, amx = CPUS[request.param]
    monkeypatch.setattr(hardware, "_onednn_fast", lambda dtype: onednn)
    monkeypatch.setattr(hardware, "_has_amx", lambda dtype: amx)
    return request.param


def _runtime_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_slow_low_precision_follows_onednn_and_amx(cpu):
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        reason = hardware.slow_low_precision(dtype, "cpu")
        assert (reason is None) == (cpu in FAST)
        if cpu == "no-onednn":
            assert f"no fast {name} convolutions" in reason and "several times slower" in reason
        if cpu == "no-amx":
            assert f"no AMX {name} tiles" in reason and "slower than float32" in reason
        assert hardware.slow_low_precision(dtype, "cuda") is None  # a statement about CPUs only
    assert hardware.slow_low_precision(torch.float32, "cpu") is None


def test_prepare_for_decoding_warns_on_a_slow_cpu(cpu):
    model = zoo.ainn(3, config="tiny").eval()
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        prepare_for_decoding(model, precision="bf16")
    found = _runtime_warnings(record)
    assert len(found) == (0 if cpu in FAST else 1)
    if found:
        assert found[0].startswith("precision bf16: ") and "slower than float32" in found[0]


def test_training_with_bf16_autocast_warns_on_a_slow_cpu(cpu, tmp_path):
    (tmp_path / "train").mkdir()
    Image.fromarray(data.astronaut()[:128, :128]).save(tmp_path / "train" / "a.png")
    cfg = TrainConfig([str(tmp_path / "train")], str(tmp_path / "run"), config="tiny", patch_size=64, amp="bf16")
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        Trainer(cfg)
        Trainer(TrainConfig(cfg.train_dirs, cfg.out_dir, config="tiny", patch_size=64))  # float32: never
    found = _runtime_warnings(record)
    assert len(found) == (0 if cpu in FAST else 1)
    if found:
        assert found[0].startswith("amp bf16: ")


def test_cli_prints_warnings_as_one_line_and_drops_the_torch_jit_notice(capsys, monkeypatch):
    def command(args):
        # What importing compressai (through torch_geometric) emits, then a warning of ours.
        warnings.warn("`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.", FutureWarning)
        warnings.warn("precision bf16: slow here", RuntimeWarning)
        print("done")

    monkeypatch.setitem(cli.COMMANDS, "info", command)
    with warnings.catch_warnings():
        warnings.resetwarnings()  # the test settings ignore that notice; the command must do it itself
        assert cli.main(["info", "x.ainn"]) == 0
    out, err = capsys.readouterr()
    assert out == "done\n"
    assert err == "ainn: warning: precision bf16: slow here\n"
