"""ainn eval: real file sizes, metrics, CompressAI-readable JSON, BD-rate, plot, CLI errors."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.metrics import peak_signal_noise_ratio

import ainn_fast
from ainn_fast import baselines, bdrate, codec, evaluate
from ainn_fast.checkpoint import load_model
from ainn_fast.cli import main
from ainn_fast.errors import InputError

@pytest.fixture(autouse=True)
def _reference_backend_one_thread():
    # What is tested here is the evaluation, not the kernels: the plain PyTorch ops. One
    # thread: on these tiny tensors a second one only adds synchronisation, which costs
    # seconds per call on a shared, loaded 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ainn_fast.use_backend("reference"):
            yield
    finally:
        torch.set_num_threads(threads)


# --- BD-rate: curves with known answers ---------------------------------------------------

RATES = [0.12, 0.25, 0.5, 0.9, 1.6]
PSNRS = [27.0, 29.5, 32.0, 34.8, 37.5]


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_rate_known_answers(method):
    assert bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS, method) == pytest.approx(0.0, abs=1e-9)
    # Same PSNR at 0.8x the rate everywhere: exactly 20 % fewer bits.
    assert bdrate.bd_rate(RATES, PSNRS, [0.8 * r for r in RATES], PSNRS, method) == pytest.approx(-20.0, abs=1e-6)
    assert bdrate.bd_rate([0.8 * r for r in RATES], PSNRS, RATES, PSNRS, method) == pytest.approx(25.0, abs=1e-6)


@pytest.mark.parametrize("method", bdrate.METHODS)
def test_bd_rate_on_curves_sampled_at_other_points(method):
    # log-rate linear in PSNR; the test curve needs half the bits, sampled elsewhere and unsorted.
    anchor_q = np.array([26.0, 29.0, 31.0, 35.0, 38.0])
    test_q = np.array([33.5, 27.2, 36.1, 30.4])
    rate = lambda q: np.exp(0.23 * q - 8.0)  # noqa: E731
    got = bdrate.bd_rate_details(rate(anchor_q), anchor_q, 0.5 * rate(test_q), test_q, method)
    assert got["bd_rate"] == pytest.approx(-50.0, abs=1e-6)
    assert got["psnr_interval"] == pytest.approx([27.2, 36.1])


def test_pchip_integral_matches_scipy():
    interpolate = pytest.importorskip("scipy.interpolate")
    x, y = np.array(PSNRS), np.log([0.1, 0.3, 0.35, 1.2, 1.3])  # uneven, with a near-flat step
    for lo, hi in [(27.0, 37.5), (28.1, 33.3), (30.0, 31.0)]:
        expected = interpolate.PchipInterpolator(x, y).integrate(lo, hi)
        assert bdrate._pchip_integral(x, y, lo, hi) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_bd_rate_refuses_what_it_cannot_measure():
    with pytest.raises(bdrate.BDRateError, match="do not overlap"):
        bdrate.bd_rate([0.1, 0.2], [20.0, 22.0], [0.1, 0.2], [30.0, 32.0])
    with pytest.raises(bdrate.BDRateError, match="at least 2"):
        bdrate.bd_rate(RATES, PSNRS, [0.3], [30.0])
    with pytest.raises(bdrate.BDRateError, match="same PSNR"):
        bdrate.bd_rate(RATES, PSNRS, [0.3, 0.4], [30.0, 30.0])
    with pytest.raises(bdrate.BDRateError, match="method"):
        bdrate.bd_rate(RATES, PSNRS, RATES, PSNRS, "linear")


# --- measurements ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crops() -> dict[str, np.ndarray]:
    return {"astronaut.png": data.astronaut()[100:164, 150:214], "coffee.png": data.coffee()[60:140, 200:296]}


@pytest.fixture()
def image_dir(tmp_path, crops) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for name, pixels in crops.items():
        Image.fromarray(pixels).save(folder / name)
    (folder / "notes.txt").write_text("not an image; ignored by extension")
    return folder


def test_metrics_against_skimage():
    rng = np.random.default_rng(0)
    a = data.astronaut()[:170, :180]
    b = np.clip(a.astype(int) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
    assert evaluate.psnr(a, b) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=255), abs=1e-9)
    assert evaluate.psnr(a, a) == evaluate.PSNR_CAP
    assert evaluate.ms_ssim(a, a) == pytest.approx(1.0)
    assert 0.5 < evaluate.ms_ssim(a, b) < 1.0
    assert evaluate.ms_ssim(a[:160], b[:160]) is None  # five scales do not fit


@pytest.mark.parametrize("key", baselines.NAMES)
def test_baseline_file_sizes_and_psnr(key, crops):
    codec_ = baselines.get(key)
    if codec_.unavailable:
        pytest.skip(codec_.unavailable)
    images = [evaluate.TestImage(n, p) for n, p in crops.items()]
    curve = evaluate.evaluate_baseline(images, codec_, qualities=[70, 20])
    doc = curve.to_json()
    assert doc["settings"] == ["q20", "q70"]  # in order of rising bpp
    assert doc["results"]["bpp"][0] < doc["results"]["bpp"][1]
    for s, q in enumerate([20, 70]):
        for i, im in enumerate(images):
            size = len(codec_.encode(Image.fromarray(im.pixels), q))
            assert doc["per_image"]["bytes"][s][i] == size
            assert doc["per_image"]["bpp"][s][i] == 8 * size / (im.width * im.height)
    if key in ("jpeg", "webp"):  # decode independently of ainn_fast's decoder
        buf = io.BytesIO()
        options = {"optimize": True} if key == "jpeg" else {"method": 6}
        Image.fromarray(images[1].pixels).save(buf, format=key.upper(), quality=70, **options)
        rec = np.asarray(Image.open(buf).convert("RGB"))
        expected = peak_signal_noise_ratio(images[1].pixels, rec, data_range=255)
        assert doc["per_image"]["psnr-rgb"][1][1] == pytest.approx(expected)


def test_jxl_routes_round_trip(crops):
    pixels = crops["coffee.png"]
    routes = [r for r in (baselines._jxl_tools(), baselines._jxl_plugin()) if isinstance(r, baselines.Codec)]
    if not routes:
        pytest.skip("no JPEG XL encoder here")
    for route in routes:
        jxl = route.encode(Image.fromarray(pixels), 50)
        assert jxl[:2] == b"\xff\x0a" or jxl[:12] == b"\x00\x00\x00\x0cJXL \r\n\x87\n"
        rec = np.asarray(route.decode(jxl))
        assert rec.shape == pixels.shape and evaluate.psnr(pixels, rec) > 25


def test_unavailable_baseline_skipped_by_default_refused_by_name(monkeypatch):
    monkeypatch.setattr(baselines, "_jxl_tools", lambda: None)
    monkeypatch.setattr(baselines, "_jxl_plugin", lambda: "no JPEG XL encoder (test)")
    codecs, skipped = evaluate.parse_baselines(None)
    assert "jxl" not in [c.key for c in codecs] and skipped == {"jxl": "no JPEG XL encoder (test)"}
    with pytest.raises(InputError, match="jxl is not available: no JPEG XL encoder"):
        evaluate.parse_baselines("jpeg,jxl")
    assert evaluate.parse_baselines("none") == ([], {})
    assert [c.key for c in evaluate.parse_baselines("WebP, jpeg,webp")[0]] == ["webp", "jpeg"]


# --- the command ------------------------------------------------------------------------------


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err):
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ainn: error:"), err
    return lines[0]


def test_eval_command_writes_compressai_results(capsys, tmp_path, image_dir, crops, tiny_checkpoint):
    from compressai.utils.plot.__main__ import parse_json_file

    out = tmp_path / "results"
    ckpt = ["--checkpoint", tiny_checkpoint]
    rc, stdout, err = run(capsys, "eval", image_dir, "-o", out, *ckpt, "--baselines", "jpeg,webp")
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["ainn_fast.json", "bd_rate.json", "jpeg.json", "rd.png", "webp.json"]
    )
    assert "ainn_fast" in stdout and "JPEG" in stdout and "WebP" in stdout
    assert "MS-SSIM is null" in err  # both crops are below 161 px

    # CompressAI's own loader reads every curve.
    for name in ("ainn_fast", "jpeg", "webp"):
        curve = parse_json_file(out / f"{name}.json", "psnr")
        assert len(curve["xs"]) == len(curve["ys"]) >= 1
    jpeg = json.loads((out / "jpeg.json").read_text())
    assert len(jpeg["results"]["bpp"]) == len(baselines.LADDERS["jpeg"])
    assert "ms-ssim-rgb" not in jpeg["results"] and jpeg["per_image"]["ms-ssim-rgb"][0] == [None, None]

    # ainn_fast's bpp are the sizes of real .ainn files, re-made here independently.
    ours = json.loads((out / "ainn_fast.json").read_text())
    model = codec.prepare_model(load_model(tiny_checkpoint))
    names = [im["name"] for im in ours["images"]]
    assert names == sorted(crops)
    bpps = []
    for name in names:
        pixels = crops[name]
        size = len(codec.compress(Image.fromarray(pixels), model))
        bpps.append(8 * size / (pixels.shape[0] * pixels.shape[1]))
        rec = np.asarray(codec.decompress(codec.compress(Image.fromarray(pixels), model), model))
        assert ours["per_image"]["psnr-rgb"][0][names.index(name)] == pytest.approx(
            peak_signal_noise_ratio(pixels, rec, data_range=255)
        )
    assert ours["results"]["bpp"] == [pytest.approx(np.mean(bpps), rel=1e-12)]
    assert all(t > 0 for t in ours["results"]["encoding_time"] + ours["results"]["decoding_time"])

    bd = json.loads((out / "bd_rate.json").read_text())
    assert set(bd["results"]) == {"jpeg", "webp"} and bd["metric"] == "psnr-rgb"
    assert bd["results"]["jpeg"]["bd_rate"] is None and "at least 2" in bd["results"]["jpeg"]["note"]  # one point
    png = (out / "rd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG" and img.size[0] > 300

    # Existing outputs are refused without --force (untouched), replaced with it.
    (out / "rd.png").write_bytes(b"old")
    rc, _, err = run(capsys, "eval", image_dir, "-o", out, *ckpt, "--baselines", "none")
    assert "--force" in one_line_error(rc, err)
    assert (out / "rd.png").read_bytes() == b"old"
    rc, _, err = run(capsys, "eval", image_dir, "-o", out, *ckpt, "--baselines", "none", "--force")
    assert rc == 0, err
    assert (out / "rd.png").read_bytes()[:4] == b"\x89PNG"


def test_bd_rate_in_results(crops):
    # Two settings of a codec against itself, shifted: the report carries the known answer.
    images = [evaluate.TestImage(n, p) for n, p in crops.items()]
    jpeg = evaluate.evaluate_baseline(images, baselines.get("jpeg"), qualities=[30, 60, 90])
    scaled = evaluate.Curve("ainn_fast", "ainn_fast", "test", settings=list(jpeg.settings), images=images)
    scaled.per_image = {m: [list(v) for v in vals] for m, vals in jpeg.per_image.items()}
    scaled.per_image["bpp"] = [[0.8 * b for b in row] for row in jpeg.per_image["bpp"]]
    report = evaluate.bd_rates(scaled, [jpeg])
    assert report["results"]["jpeg"]["bd_rate"] == pytest.approx(-20.0, abs=1e-6)
    assert "-20.0 %" in evaluate.table([scaled, jpeg], report)


def test_eval_default_model(capsys, tmp_path):
    # The default model at a shipped quality: the lite weights in the package.
    Image.fromarray(data.chelsea()[:32, :48]).save(tmp_path / "cat.png")  # small: the lite model is slow on CPU
    rc, _, err = run(capsys, "eval", tmp_path, "-o", tmp_path / "r", "--quality", "3", "--baselines", "none")
    assert rc == 0, err
    assert "untrained" not in err
    doc = json.loads((tmp_path / "r" / "ainn_fast.json").read_text())
    assert doc["settings"] == [f"{codec.DEFAULT_CONFIG} q3 mse"]
    # A quality without shipped weights is refused with the ones that ship.
    rc, _, err = run(capsys, "eval", tmp_path, "-o", tmp_path / "r2", "--quality", "2", "--baselines", "none")
    assert rc == 2 and "shipped qualities: 1, 3, 6" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["eval", "{tmp}/missing", "-o", "{tmp}/out"], "no such folder"),
        (["eval", "{tmp}/empty", "-o", "{tmp}/out"], "no images"),
        (["eval", "{tmp}/empty/../images/a.txt", "-o", "{tmp}/out"], "not a folder"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--baselines", "jpeg,bpg"], "unknown baseline bpg"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--baselines", ""], "unknown baseline"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--quality", "9"], "quality"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--quality", "2", "--checkpoint", "{ckpt}"], "--quality"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--checkpoint", "{tmp}/nockpt.safetensors"], "does not exist"),
        (["eval", "{tmp}/images", "-o", "{tmp}/out", "--device", "tpu"], "unknown device"),
        (["eval", "{tmp}/images", "-o", "{tmp}/images/a.txt"], "not a folder"),
        (["eval", "{tmp}/images"], "-o/--output"),
        (["eval", "{tmp}/bad", "-o", "{tmp}/out", "--baselines", "none"], "not an image"),
    ],
)
def test_eval_bad_input_exits_2_with_one_line(capsys, tmp_path, tiny_checkpoint, argv, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "images").mkdir()
    Image.fromarray(data.astronaut()[:32, :32]).save(tmp_path / "images" / "a.png")
    (tmp_path / "images" / "a.txt").write_text("x")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not a png")
    argv = [a.format(tmp=tmp_path, ckpt=tiny_checkpoint) for a in argv]
    before = set(tmp_path.rglob("*"))
    rc, _, err = run(capsys, *argv)
    assert message in one_line_error(rc, err)
    assert set(tmp_path.rglob("*")) == before  # nothing written
