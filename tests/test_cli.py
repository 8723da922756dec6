"""The ainn command: round trips through files, exit codes, one-line errors, no partial files."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import container
from ainn_fast.cli import main


@pytest.fixture()
def photo_png(tmp_path) -> Path:
    path = tmp_path / "coffee.png"
    Image.fromarray(data.coffee()[100:170, 200:290]).save(path)
    return path


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_compress_info_decompress(capsys, tmp_path, photo_png, tiny_checkpoint):
    ainn = tmp_path / "c.ainn"
    rc, out, err = run(capsys, "compress", photo_png, "-o", ainn, "--checkpoint", tiny_checkpoint)
    assert rc == 0, err
    size = ainn.stat().st_size
    assert f"{size} bytes" in out
    rc, out, err = run(capsys, "info", ainn)
    assert rc == 0
    assert "tiny quality 3 mse" in out and "90x70 RGB" in out
    assert "version 4 (fixed-point parameters, serial context, scale shift " in out
    assert "in 3 row streams" in out  # latents 8 x 8: a front spans ceil(8 / 3) rows
    bpp = float(out.split("bpp:")[1].split()[0])
    assert bpp == pytest.approx(8 * size / (90 * 70), abs=1e-4)
    png = tmp_path / "d.png"
    rc, out, err = run(capsys, "decompress", ainn, "-o", png, "--checkpoint", tiny_checkpoint)
    assert rc == 0, err
    with Image.open(png) as img:
        assert img.size == (90, 70) and img.mode == "RGB"
    one = tmp_path / "one.ainn"  # one stream: format 3, smaller by two streams' framing
    rc, out, err = run(capsys, "compress", photo_png, "-o", one, "--checkpoint", tiny_checkpoint, "--streams", "0")
    assert rc == 0, err
    assert container.unpack(one.read_bytes()).header.version == 3 and one.stat().st_size < size


def test_compress_with_refinement_writes_a_file_any_decoder_reads(capsys, tmp_path, photo_png):
    ainn, png = tmp_path / "r.ainn", tmp_path / "r.png"
    rc, out, err = run(capsys, "compress", photo_png, "-o", ainn, "--refine", "2")
    assert rc == 0, err
    rc, _, err = run(capsys, "decompress", ainn, "-o", png)  # the plain default decoder
    assert rc == 0, err
    with Image.open(png) as img, Image.open(photo_png) as src:
        a, b = np.asarray(img, dtype=np.float64), np.asarray(src, dtype=np.float64)
    assert 10 * np.log10(255**2 / np.mean((a - b) ** 2)) > 25  # the shipped q3 model decodes a photo


def one_line_error(rc, err):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ainn: error:"), err
    return lines[0]


def test_existing_output_needs_force(capsys, tmp_path, photo_png, tiny_checkpoint):
    ainn = tmp_path / "c.ainn"
    ainn.write_bytes(b"precious")
    rc, _, err = run(capsys, "compress", photo_png, "-o", ainn, "--checkpoint", tiny_checkpoint)
    assert "--force" in one_line_error(rc, err)
    assert ainn.read_bytes() == b"precious"
    rc, _, err = run(capsys, "compress", photo_png, "-o", ainn, "--checkpoint", tiny_checkpoint, "--force")
    assert rc == 0 and ainn.read_bytes()[:4] == b"AINN"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compress"], "input"),
        (["compress", "{png}", "--quality", "9"], "quality"),
        (["compress", "{png}", "--bogus"], "unrecognized"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--refine", "-2"], "steps >= 0"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--refine", "lots"], "steps >= 0"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--streams", "300"], "stream count 0..255, got '300' (see"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--streams", "-1"], "stream count 0..255, got '-1' (see"),
        (["frobnicate"], "invalid choice"),
        (["compress", "{tmp}/missing.png", "-o", "{tmp}/x.ainn"], "no such file"),
        (["compress", "{tmp}/notimage.png", "-o", "{tmp}/x.ainn"], "not an image"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--checkpoint", "{tmp}/nockpt.safetensors"], "does not exist"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--checkpoint", "{tmp}/notimage.png"], "checkpoint"),
        (["compress", "{png}", "-o", "{tmp}/nodir/x.ainn"], "does not exist"),
        (["compress", "{png}", "-o", "{tmp}/x.ainn", "--device", "tpu"], "unknown device"),
        (["decompress", "{tmp}/notimage.png", "-o", "{tmp}/x.png"], "not an .ainn file"),
        (["decompress", "{tmp}/x.ainn", "-o", "{tmp}/x.png"], "no such file"),
        (["info", "{tmp}/notimage.png"], "not an .ainn file"),
    ],
)
def test_bad_input_exits_2_with_one_line_and_no_output(capsys, tmp_path, photo_png, argv, message):
    (tmp_path / "notimage.png").write_bytes(b"this is not a PNG at all")
    argv = [a.format(png=photo_png, tmp=tmp_path) for a in argv]
    before = set(tmp_path.rglob("*"))
    rc, _, err = run(capsys, *argv)
    assert message in one_line_error(rc, err)
    assert set(tmp_path.rglob("*")) == before  # nothing written, no temporary left


def test_truncated_file_and_wrong_weights(capsys, tmp_path, photo_png, tiny_checkpoint):
    ainn = tmp_path / "c.ainn"
    assert run(capsys, "compress", photo_png, "-o", ainn, "--checkpoint", tiny_checkpoint)[0] == 0
    cut = tmp_path / "cut.ainn"
    cut.write_bytes(ainn.read_bytes()[:-7])
    rc, _, err = run(capsys, "decompress", cut, "-o", tmp_path / "cut.png")
    assert "corrupt or truncated" in one_line_error(rc, err)
    assert not (tmp_path / "cut.png").exists()
    # Decoding without the checkpoint: the default tiny model has other weights.
    rc, _, err = run(capsys, "decompress", ainn, "-o", tmp_path / "w.png")
    line = one_line_error(rc, err)
    assert container.unpack(ainn.read_bytes()).header.weights_hash.hex() in line
    assert not (tmp_path / "w.png").exists()


def test_unknown_output_format_is_refused_before_decoding(capsys, tmp_path, photo_png, tiny_checkpoint):
    ainn = tmp_path / "c.ainn"
    assert run(capsys, "compress", photo_png, "-o", ainn, "--checkpoint", tiny_checkpoint)[0] == 0
    rc, _, err = run(capsys, "decompress", ainn, "-o", tmp_path / "out.xyz", "--checkpoint", tiny_checkpoint)
    assert "unknown output format" in one_line_error(rc, err)


def test_rgba_input_keeps_alpha_through_files(capsys, tmp_path, tiny_checkpoint):
    rgba = Image.fromarray(data.astronaut()[:40, :50]).convert("RGBA")
    rgba.putalpha(Image.fromarray((np.arange(2000) % 256).astype(np.uint8).reshape(40, 50)))
    src = tmp_path / "a.png"
    rgba.save(src)
    assert run(capsys, "compress", src, "-o", tmp_path / "a.ainn", "--checkpoint", tiny_checkpoint)[0] == 0
    assert run(capsys, "decompress", tmp_path / "a.ainn", "-o", tmp_path / "b.png", "--checkpoint", tiny_checkpoint)[0] == 0
    with Image.open(tmp_path / "b.png") as out:
        assert out.mode == "RGBA" and out.getchannel("A").tobytes() == rgba.getchannel("A").tobytes()


def test_console_script_entry_point():
    # The installed `ainn` runs main(); as a module it behaves the same.
    r = subprocess.run([sys.executable, "-m", "ainn_fast.cli", "info", "/nonexistent.ainn"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "ainn: error: /nonexistent.ainn: no such file"


def test_bench_writes_json_whose_sizes_are_real_files(capsys, tmp_path):
    import json

    from ainn_fast import bench, codec

    out = tmp_path / "bench.json"
    rc, stdout, err = run(capsys, "bench", "--configs", "tiny", "--size", "64x64", "--repeat", "1", "--no-baseline", "-o", out)
    assert rc == 0, err
    (row,) = json.loads(out.read_text())["configs"]
    model = codec.prepare_model(codec.default_model(3, config="tiny"))
    # The bytes reported are those of a real file of the same photo and model, v1 included.
    assert row["bytes"] == len(codec.compress(bench.photo(64, 64), model))
    assert row["v1_bytes"] == len(codec.encode(bench.photo(64, 64), model, version=1)[0])
    # Timed apart (medians of separate runs), so under load the whole decode may time
    # below its latent part: only that both were measured.
    assert row["decode_s"] > 0 and row["decode_latents_s"] > 0 and "tiny:" in stdout
    # Every entropy path of the device timed, the default among them.
    paths = row["by_entropy_path"]
    assert list(paths["decode_latents_s"]) == list(paths["encode_s"]) == bench.entropy_paths(torch.device("cpu"))
    assert row["entropy_path"] in paths["encode_s"] and "entropy paths (default" in stdout
    rc, _, err = run(capsys, "bench", "--configs", "tiny", "--size", "64x64", "-o", out)
    assert rc == 2 and "exists" in err  # no overwrite without --force


def test_bench_refuses_a_bad_size(capsys):
    rc, _, err = run(capsys, "bench", "--size", "big")
    assert rc == 2 and err.count("\n") == 1 and "WIDTHxHEIGHT" in err


def test_demo_writes_a_file_and_its_decoding(capsys, tmp_path):
    # The README's main job; --streams reaches its encoder too (0: format 3's one stream).
    rc, out, err = run(capsys, "demo", "-o", tmp_path, "--streams", "0")
    assert rc == 0, err
    data = (tmp_path / "astronaut.ainn").read_bytes()
    assert container.unpack(data).header.version == 3 and f"{len(data)} bytes" in out
    with Image.open(tmp_path / "astronaut.png") as img:
        assert img.size == (512, 512)


@pytest.mark.parametrize("variable, value, says", [("AINN_BACKEND", "bogus", "unknown backend 'bogus'"),
                                                   ("AINN_ENTROPY_PATH", "gpu", "AINN_ENTROPY_PATH='gpu'")])
def test_a_bad_environment_option_is_refused_before_anything_is_written(capsys, tmp_path, monkeypatch, variable,
                                                                          value, says):
    monkeypatch.setenv(variable, value)
    out = tmp_path / "demo"
    rc, _, err = run(capsys, "demo", "-o", out)
    assert rc == 2 and err.count("\n") == 1 and says in err
    assert not out.exists()


def test_bench_peak_memory_per_pixel_reads_the_cuda_allocator(monkeypatch):
    """The GPU memory figure (codec.GPU_BYTES_PER_PIXEL's yardstick): the allocator's peak
    during the call, minus what was allocated before it, over the padded pixels; None on
    a CPU. The CUDA allocator is stood in for, as this machine has no GPU."""
    from ainn_fast import bench

    state = {"allocated": 1000, "peak": 0}
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: state["allocated"])
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda device=None: state.update(peak=state["allocated"]))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: state["peak"])

    def work():  # allocates 64 * 128 * 10 bytes at its peak, then frees them
        state["peak"] = state["allocated"] + 64 * 128 * 10

    assert bench.peak_bytes_per_pixel(work, torch.device("cpu"), 100, 60) is None
    assert bench.peak_bytes_per_pixel(work, torch.device("cuda"), 100, 60) == 10.0  # padded to 128 x 64
