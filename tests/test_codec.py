"""Whole-file round trips through the codec API: sizes, modes, determinism, identity."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import codec, container, zoo
from ainn_fast.errors import FormatError, InputError, ModelMismatchError


def photo(name: str, size=None) -> Image.Image:
    img = Image.fromarray(getattr(data, name)())
    return img.crop((0, 0, *size)) if size else img


@pytest.mark.parametrize(
    "name, size",
    [("astronaut", (1, 1)), ("coffee", (63, 65)), ("chelsea", (100, 300)), ("rocket", (130, 70)), ("astronaut", (64, 64))],
)
def test_round_trip_keeps_y_hat_size_and_mode(tiny_codec_model, name, size):
    img = photo(name, size)
    blob, y_enc = codec.encode(img, tiny_codec_model)
    out, y_dec = codec.decode(blob, tiny_codec_model)
    assert torch.equal(y_enc, y_dec)
    assert out.size == img.size and out.mode == img.mode
    h, w = -(-size[1] // 64) * 4, -(-size[0] // 64) * 4
    assert y_dec.shape == (1, tiny_codec_model.M, h, w)


def test_tall_thin_image(tiny_codec_model):
    cam = np.concatenate([data.camera(), data.camera()])  # 1024 x 512 gray photo
    img = Image.fromarray(np.repeat(cam[:1000, :100, None], 3, axis=2))  # 100 wide, 1000 high
    blob, y_enc = codec.encode(img, tiny_codec_model)
    out, y_dec = codec.decode(blob, tiny_codec_model)
    assert torch.equal(y_enc, y_dec) and out.size == (100, 1000)


def test_same_input_same_bytes(tiny_codec_model):
    img = photo("coffee", (80, 70))
    assert codec.compress(img, tiny_codec_model) == codec.compress(img.copy(), tiny_codec_model)


def test_y_hat_is_the_rounded_latent_around_the_predicted_means(tiny_codec_model):
    img = photo("chelsea", (64, 128))
    prepared = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        y = tiny_codec_model.g_a(prepared)
    _, y_hat = codec.encode(img, tiny_codec_model)
    assert (y_hat - y).abs().max() <= 0.5 + 1e-5


def test_modes(tiny_codec_model):
    base = photo("astronaut", (70, 50))
    gray = base.convert("L")
    rgba = base.copy()
    rgba.putalpha(Image.fromarray(np.arange(70 * 50, dtype=np.uint8).reshape(50, 70)))
    la = gray.copy()
    la.putalpha(128)
    pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    bilevel = gray.convert("1")
    for img in (gray, rgba, la, pal, bilevel):
        out = codec.decompress(codec.compress(img, tiny_codec_model), tiny_codec_model)
        assert out.mode == img.mode and out.size == img.size, img.mode
        if "A" in img.mode:  # alpha is stored losslessly
            assert out.getchannel("A").tobytes() == img.getchannel("A").tobytes()
        if img.mode == "P":
            assert out.getpalette()[: 16 * 3] == img.getpalette()[: 16 * 3]
            assert set(np.unique(np.asarray(out))) <= set(range(16))


def test_sixteen_bit_is_converted_to_eight(tiny_codec_model):
    arr = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    prepared = codec.image_io.prepare(img)
    assert prepared.mode == "L" and "16-bit" in prepared.notes[0]
    torch.testing.assert_close(prepared.rgb[0, 0], torch.from_numpy(((arr.astype(np.int64) + 128) // 257).astype(np.float32) / 255))
    out = codec.decompress(codec.compress(img, tiny_codec_model), tiny_codec_model)
    assert out.mode == "L" and out.size == (64, 64)


def test_files_read_for_training_and_evaluation_are_what_the_codec_codes(tmp_path):
    """image_io.read_rgb (training crops, evaluation references) gives the pixels the
    codec codes: 16-bit gray scaled to 8 bits (not clipped at 255), EXIF orientation
    applied; a damaged or unknown file is an InputError that names it."""
    from ainn_fast import evaluate, training

    arr = (np.linspace(0, 65535, 48 * 40).reshape(40, 48)).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "gray16.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    photo("chelsea", (80, 40)).save(tmp_path / "turned.jpg", exif=exif)
    for name in ("gray16.png", "turned.jpg"):
        path = tmp_path / name
        coded = codec.image_io.prepare(Image.open(path)).rgb[0]  # what compress codes, in [0, 1]
        want = torch.round(coded * 255).to(torch.uint8)
        got = codec.image_io.read_rgb(path)
        assert torch.equal(torch.from_numpy(got).permute(2, 0, 1), want), name
        assert torch.equal(training._load_rgb(path), want), name
        assert np.array_equal(evaluate.load_image(path).pixels, got), name
    assert codec.image_io.read_rgb(tmp_path / "gray16.png").max() == 255  # not all 255: scaled
    assert (codec.image_io.read_rgb(tmp_path / "gray16.png") < 128).mean() > 0.4
    whole = (tmp_path / "gray16.png").read_bytes()
    (tmp_path / "bad.png").write_bytes(whole[: len(whole) // 2])  # cut in its pixel data
    (tmp_path / "text.jpg").write_text("not an image")
    for name, message in (("bad.png", "damaged image"), ("text.jpg", "not an image format"), ("gone.png", "no such file")):
        with pytest.raises(InputError, match=f"{name}: {message}"):
            codec.image_io.read_rgb(tmp_path / name)
    with pytest.raises(InputError, match="text.jpg: not an image format"):
        training.CropBatches([tmp_path / "turned.jpg", tmp_path / "text.jpg"], 32)


def test_float_images_are_refused(tiny_codec_model):
    with pytest.raises(InputError, match="floating-point"):
        codec.compress(Image.new("F", (8, 8)), tiny_codec_model)


def test_exif_orientation_is_applied(tiny_codec_model):
    img = photo("chelsea", (80, 40))  # 80 wide, 40 high
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif)
    loaded = Image.open(io.BytesIO(buf.getvalue()))
    out = codec.decompress(codec.compress(loaded, tiny_codec_model), tiny_codec_model)
    assert out.size == (40, 80)


def test_arrays_and_tensors_are_accepted(tiny_codec_model):
    arr = data.astronaut()[:64, :64]
    from_array = codec.compress(arr, tiny_codec_model)
    from_tensor = codec.compress(torch.from_numpy(arr).permute(2, 0, 1).float() / 255, tiny_codec_model)
    assert from_array == from_tensor == codec.compress(Image.fromarray(arr), tiny_codec_model)
    with pytest.raises(InputError, match="uint8"):
        codec.compress(arr.astype(np.float32), tiny_codec_model)
    # Paths are the likely slip: a one-line InputError that says what to pass instead
    with pytest.raises(InputError, match=r"type str: open the file first \(PIL.Image.open\)"):
        codec.compress("photo.png", tiny_codec_model)
    for not_bytes in ("photo.ainn", None):
        with pytest.raises(InputError, match="an .ainn file's bytes, got"):
            codec.decompress(not_bytes, tiny_codec_model)
    with pytest.raises(InputError, match="an .ainn file's bytes, got str"):
        codec.decode_batch([from_array, "photo.ainn"], tiny_codec_model)
    assert codec.decompress(bytearray(from_array), tiny_codec_model).size == (64, 64)


def test_header_names_the_model_and_a_mismatch_is_refused(tiny_codec_model):
    blob = codec.compress(photo("coffee", (64, 64)), tiny_codec_model)
    h = container.unpack(blob).header
    assert (h.config, h.quality, h.metric) == ("tiny", 3, "mse")
    assert h.weights_hash == codec.weights_hash(tiny_codec_model)
    torch.manual_seed(1)
    other = codec.prepare_model(zoo.ainn(3, config="tiny"))
    with pytest.raises(ModelMismatchError, match=h.weights_hash.hex() + ".*" + other._ainn_hash.hex() + ".*--checkpoint"):
        codec.decompress(blob, other)


def test_default_model_is_reproducible():
    a, b = codec.default_model(1, config="tiny"), codec.default_model(1, config="tiny")
    assert codec.weights_hash(a) == codec.weights_hash(b)
    blob = codec.compress(photo("coffee", (64, 64)), codec.prepare_model(a))
    out = codec.decompress(blob)  # finds the model from the header
    assert out.size == (64, 64)


def test_absurd_sizes_are_refused_before_allocating(tiny_codec_model, monkeypatch):
    monkeypatch.setattr(codec, "_available_bytes", lambda device: 8 * 2**30)
    per_pixel = codec.bytes_per_pixel("lite", torch.device("cpu"), decoding=True)
    with pytest.raises(InputError, match=r"65535x65535 image needs about 4096.0 GiB"):
        codec.check_memory(65535, 65535, torch.device("cpu"), per_pixel)
    blob = bytearray(codec.compress(photo("coffee", (64, 64)), tiny_codec_model))
    c = container.unpack(bytes(blob))
    c.header.width = c.header.height = 65535
    forged = container.pack(c)
    with pytest.raises(InputError, match="GiB"):
        codec.decompress(forged, tiny_codec_model)


def test_refinement_memory_estimate_follows_its_precision(tiny_codec_model, monkeypatch):
    """A bf16 refinement keeps half the activations (2.1-2.4 KiB a pixel measured against
    4.1-4.4 in float32): its estimate is lower, and the check uses the one that applies."""
    cpu = torch.device("cpu")
    fp32 = codec.bytes_per_pixel("lite", cpu, False, refine=True)
    bf16 = codec.bytes_per_pixel("lite", cpu, False, refine=True, refine_bf16=True)
    assert 2.4 * 1024 < bf16 < fp32 and fp32 > 4.4 * 1024
    asked = []
    monkeypatch.setattr(codec, "check_memory", lambda w, h, dev, per_pixel: asked.append(per_pixel))
    for precision in ("fp32", "bf16"):
        codec.encode(photo("coffee", (64, 64)), tiny_codec_model, refine=1, refine_precision=precision)
    assert asked == [fp32, bf16]


def test_default_model_is_loaded_once_for_codec_calls_and_never_shared(monkeypatch):
    # Loading and preparing the default model cost about as much as decoding a small photo;
    # codec's own calls reuse one, but resolve_model hands each caller a model of its own
    # (prepare_for_decoding changes a model in place).
    loads = []
    real = codec.default_model
    monkeypatch.setattr(codec, "default_model", lambda *a, **k: loads.append(a) or real(*a, **k))
    codec._shared_default.cache_clear()
    img = Image.fromarray(data.astronaut()[:64, :96])
    blob = codec.compress(img, quality=1)
    first, second = codec.decompress(blob), codec.decompress(blob)
    assert len(loads) == 1 and first.tobytes() == second.tobytes()
    header = container.unpack(blob).header
    mine = codec.resolve_model(header)
    assert len(loads) == 2 and mine is not codec._shared_default(1, "mse", "lite", "cpu")
