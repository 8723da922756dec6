"""bf16/fp16 on a CPU where they run slower than float32 warns instead of silently losing
time: where oneDNN has no kernels for them (measured 6-10x slower on an AVX2 CPU) and where
its kernels lose to float32 on this CPU, which only timing tells (AVX-512 bf16 without AMX
ran 1.3-2x slower on a Xeon VM and 2x faster on an AMD Zen 5 VM); the ainn command prints
warnings as one line each, like its errors."""

import math
import warnings

import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import cli, hardware, zoo
from ainn_fast.inference import prepare_for_decoding
from ainn_fast.training import TrainConfig, Trainer


# oneDNN's answer (None: this torch cannot say) and the probe's (float32, low) seconds.
CPUS = {
    "no-onednn": (False, None),  # not timed: oneDNN's "no" is the whole answer
    "slower": (True, (1.0e-3, 1.6e-3)),  # the Xeon VM without AMX
    "faster": (True, (2.5e-3, 1.3e-3)),  # the Zen 5 VM
    "within-noise": (None, (1.0e-3, 1.05e-3)),
}
FAST = {"faster", "within-noise"}  # no warning without evidence of slowness


@pytest.fixture(params=list(CPUS))
def cpu(request, monkeypatch) -> str:
    onednn, seconds = CPUS[request.param]

    def timed(dtype, threads):
        assert seconds is not None, "timed although oneDNN already answered"
        return seconds

    monkeypatch.setattr(hardware, "_onednn_fast", lambda dtype: onednn)
    monkeypatch.setattr(hardware, "_conv_seconds", timed)
    return request.param


def _runtime_warnings(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, RuntimeWarning)]


def test_slow_low_precision_follows_onednn_then_the_measurement(cpu):
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "fp16")):
        reason = hardware.slow_low_precision(dtype, "cpu")
        assert (reason is None) == (cpu in FAST)
        if cpu == "no-onednn":
            assert f"no fast {name} convolutions" in reason and "several times slower" in reason
        if cpu == "slower":
            assert reason.startswith(f"{name} convolutions run 1.6x slower than float32")
            assert "1.60 ms against 1.00 ms" in reason
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


def test_the_probe_times_both_precisions_once_per_thread_count():
    hardware._conv_seconds.cache_clear()
    threads = torch.get_num_threads()
    fp32_s, bf16_s = hardware._conv_seconds(torch.bfloat16, threads)
    assert all(0 < t < 1 and math.isfinite(t) for t in (fp32_s, bf16_s))  # milliseconds, really run
    assert hardware._conv_seconds(torch.bfloat16, threads) == (fp32_s, bf16_s)
    assert hardware._conv_seconds.cache_info().hits == 1  # the second question is not timed again


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
