"""Encoder-side latent refinement: a smaller rate-distortion cost measured on the real
file, an ordinary file for the decoder, and never a worse file than without it."""

import numpy as np
import pytest
import torch
from skimage import data

from ainn_fast import codec, entropy_coding, refinement
from ainn_fast.errors import InputError
from ainn_fast.losses import lambda_for

QUALITY = 3
CROP = data.astronaut()[96:224, 160:352]  # 128x192: face and helmet, a real photo


@pytest.fixture(scope="module")
def model():
    return codec.prepare_model(codec.default_model(QUALITY))  # the shipped weights


def file_cost(blob: bytes, image: np.ndarray, model) -> float:
    """J = bpp + lambda * 255^2 * MSE from the file's length and its decoded 8-bit image,
    computed here with numpy, apart from the module's own rd_cost."""
    decoded = np.asarray(codec.decompress(blob, model), dtype=np.float64)
    mse = np.mean((decoded - image.astype(np.float64)) ** 2)
    return 8 * len(blob) / (image.shape[0] * image.shape[1]) + lambda_for(QUALITY) * mse


def padded_crop_and_latent(model) -> tuple[torch.Tensor, torch.Tensor]:
    x = codec.pad_to_stride(torch.from_numpy(CROP).permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        return x, model.g_a(x)


def test_refined_file_costs_less_and_decodes_to_the_encoders_latent(model):
    plain, _ = codec.encode(CROP, model)
    refined, y_hat = codec.encode(CROP, model, refine=8)
    assert refined != plain
    # Measured on the files: at least 1 % lower (8 steps give 3-4 % on this crop).
    assert file_cost(refined, CROP, model) < 0.99 * file_cost(plain, CROP, model)
    # An ordinary file: the decoder rebuilds exactly the latent the encoder coded.
    _, decoded_y_hat = codec.decode(refined, model)
    assert torch.equal(decoded_y_hat, y_hat)


def test_refinement_is_deterministic_and_leaves_the_model_alone(model):
    before = codec.weights_hash(model)
    grads = [p.requires_grad for p in model.parameters()]
    first, _ = codec.encode(CROP, model, refine=3)
    assert codec.encode(CROP, model, refine=3)[0] == first
    assert codec.weights_hash(model) == before
    assert [p.requires_grad for p in model.parameters()] == grads
    assert all(p.grad is None for p in model.parameters())


def test_a_refinement_that_does_not_pay_is_not_kept(model, monkeypatch):
    plain, plain_y_hat = codec.encode(CROP, model)
    # A "refinement" that ruins the latent must lose to the plain file on the real cost.
    monkeypatch.setattr(codec, "refine_latent", lambda m, x, y, *a, **k: [(y + 3.0, None), (y - 3.0, None)])
    kept, y_hat = codec.encode(CROP, model, refine=2)
    assert kept == plain and torch.equal(y_hat, plain_y_hat)


def test_rd_cost_matches_an_independent_computation(model):
    blob, y_hat = codec.encode(CROP, model)
    target = torch.from_numpy(CROP).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        x_hat = model.g_s(y_hat)[..., : CROP.shape[0], : CROP.shape[1]]
    # rd_cost counts the bytes it is given; the whole file's are given here.
    assert refinement.rd_cost(model, len(blob), x_hat, target) == pytest.approx(file_cost(blob, CROP, model), rel=1e-5)


def test_training_mode_rates_leave_batchnorm_statistics_alone(model):
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    assert stats  # PDM has BatchNorms
    y = torch.randn(1, model.M, 4, 4)
    model.forward_latent(y, "mixed", 2, training=True)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in stats.items())
    assert not model.training


def test_refinement_stops_before_a_non_finite_loss(model):
    x, y = padded_crop_and_latent(model)
    y_bad = y.clone()
    y_bad[0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        z_bad = model.h_a(y_bad)
    for out_y, out_z in refinement.refine_latent(model, x, y_bad, CROP.shape[:2], 3, snapshots=2):
        assert torch.equal(out_y.nan_to_num(7.0), y_bad.nan_to_num(7.0))  # not a single step taken
        assert torch.equal(out_z.nan_to_num(7.0), z_bad.nan_to_num(7.0))


def test_bad_refinement_options_are_refused(model):
    with pytest.raises(InputError, match="refinement steps"):
        codec.encode(CROP, model, refine=-1)
    unnamed = codec.prepare_model(codec.default_model(QUALITY))
    unnamed.quality = 0
    with pytest.raises(InputError, match="quality"):
        codec.encode(CROP, unnamed, refine=1)


def test_snapshots_lie_on_one_trajectory(model):
    x, y = padded_crop_and_latent(model)
    snaps = refinement.refine_latent(model, x, y, CROP.shape[:2], 6, snapshots=3)
    (last,) = refinement.refine_latent(model, x, y, CROP.shape[:2], 6)
    assert len(snaps) == 3  # taking snapshots changes nothing:
    assert torch.equal(snaps[-1][0], last[0]) and torch.equal(snaps[-1][1], last[1])
    with torch.no_grad():
        z = model.h_a(y)
    for start, i in ((y, 0), (z, 1)):  # y and z, after 2, 4 and 6 steps, further each time
        moved = [float((s[i] - start).abs().mean()) for s in snaps]
        assert 0 < moved[0] < moved[1] < moved[2]


def test_the_file_codes_the_refined_z(model):
    """The kept file's hyper-latent is the refined z, not h_a of the refined y, and the
    decoder rebuilds the encoder's y_hat from it bit-exactly."""
    x, y = padded_crop_and_latent(model)
    ((y2, z2),) = refinement.refine_latent(model, x, y, CROP.shape[:2], 4)
    bottleneck = model.entropy_bottleneck
    with torch.no_grad():
        (y_string,), (z_string,), y_hat, (shift,) = entropy_coding.encode_latents(model, y2, z=z2)
        assert z_string == bottleneck.compress(z2)[0] != bottleneck.compress(model.h_a(y2))[0]
        (decoded,) = entropy_coding.decode_latents(model, [y_string], [z_string], [y2.shape[-2:]], scale_shifts=[shift])
    assert torch.equal(decoded, y_hat)


def test_learning_rate_follows_the_quality(model, monkeypatch):
    seen = []
    monkeypatch.setattr(torch.optim, "Adam", lambda params, lr: seen.append(lr) or torch.optim.SGD(params, lr=lr))
    x, y = padded_crop_and_latent(model)
    refinement.refine_latent(model, x, y, CROP.shape[:2], 1)
    refinement.refine_latent(model, x, y, CROP.shape[:2], 1, lr=0.5)
    assert seen == [refinement.LEARNING_RATES[QUALITY], 0.5]
    assert sorted(refinement.LEARNING_RATES) == list(range(1, 9))


def test_synthesis_precision_choices(monkeypatch):
    assert refinement.synthesis_dtype("fp32", "cpu") is None
    assert refinement.synthesis_dtype("bf16", "cpu") is torch.bfloat16
    # auto: bf16 exactly where the hardware probe finds it not slower than float32
    for slow, want in (("slower here", None), (None, torch.bfloat16)):
        monkeypatch.setattr(refinement, "slow_low_precision", lambda dtype, device, slow=slow: slow)
        assert refinement.synthesis_dtype("auto", "cpu") is want
    with pytest.raises(ValueError, match="fp16"):
        refinement.synthesis_dtype("fp16", "cpu")
    with pytest.raises(InputError, match="refinement precision 'fp16'"):
        codec.encode(CROP, None, refine=1, refine_precision="fp16")


def test_bf16_synthesis_steps_refine_too_and_keep_the_rate_in_float32(model, monkeypatch):
    """bf16 steps take another path than float32 ones (the synthesis runs in bf16: its
    output dtype is seen), still lower the file's real cost, and leave the entropy model
    in float32."""
    seen = {}
    g_s, entropy_latent = model.g_s, model.entropy_latent

    def spy_g_s(y_hat):
        out = g_s(y_hat)
        seen.setdefault("g_s", set()).add(out.dtype)
        return out

    def spy_entropy(*a, **k):
        y_hat, likelihoods = entropy_latent(*a, **k)
        seen.setdefault("rate", set()).update(v.dtype for v in likelihoods.values())
        return y_hat, likelihoods

    monkeypatch.setattr(model, "g_s", spy_g_s)
    monkeypatch.setattr(model, "entropy_latent", spy_entropy)
    x, y = padded_crop_and_latent(model)
    ((bf16, _),) = refinement.refine_latent(model, x, y, CROP.shape[:2], 4, precision="bf16")
    assert seen == {"g_s": {torch.bfloat16}, "rate": {torch.float32}}
    ((fp32, _),) = refinement.refine_latent(model, x, y, CROP.shape[:2], 4, precision="fp32")
    assert not torch.equal(bf16, fp32) and torch.isfinite(bf16).all()
    monkeypatch.undo()
    plain, _ = codec.encode(CROP, model)
    refined, _ = codec.encode(CROP, model, refine=8, refine_precision="bf16")
    assert file_cost(refined, CROP, model) < 0.99 * file_cost(plain, CROP, model)
