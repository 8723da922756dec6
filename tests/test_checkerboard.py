"""The optional checkerboard context: two passes, the second reading only anchors."""

import copy

import pytest
import torch
from PIL import Image
from skimage import data

from ainn_fast import codec, container, zoo
from ainn_fast.errors import ModelMismatchError
from ainn_fast.fixed_point import FixedPointEntropy
from ainn_fast.layers.context import CheckerboardContext, anchors


@pytest.fixture(scope="module")
def cb_model():
    torch.manual_seed(3)
    return codec.prepare_model(zoo.ainn(3, config="tiny", context="checkerboard"))


def test_context_reads_anchors_only_and_is_zero_on_them():
    torch.manual_seed(0)
    ctx = CheckerboardContext(4, 8)
    y = torch.randn(2, 4, 7, 9)
    a = anchors(7, 9)
    out = ctx(y)
    assert out[:, :, a].abs().max() == 0 and out[:, :, ~a].abs().min() > 0
    # Changing every non-anchor changes nothing; changing an anchor changes its neighbours.
    other = torch.where(a, y, torch.randn_like(y))
    assert torch.equal(ctx(other), out)
    moved = y.clone()
    moved[:, :, 3, 3] += 1.0  # (3, 3) is an anchor
    diff = (ctx(moved) - out).abs().sum(dim=(0, 1)) > 0
    assert diff[2, 3] and diff[3, 4] and diff[3, 2] and diff[4, 3] and not diff[3, 3]


@pytest.mark.parametrize("size", [(64, 64), (130, 70), (200, 128)])
def test_round_trip_and_flag(cb_model, size):
    img = Image.fromarray(data.coffee()).crop((0, 0, *size))
    blob, y_enc = codec.encode(img, cb_model)
    assert container.unpack(blob).header.context == "checkerboard"
    out, y_dec = codec.decode(blob, cb_model)
    assert torch.equal(y_enc, y_dec) and out.size == img.size


def test_batch_decode_equals_single(cb_model):
    files = [codec.compress(Image.fromarray(data.astronaut()).crop((0, 0, w, h)), cb_model) for w, h in ((64, 64), (128, 70))]
    for (_, alone), (_, batched) in zip([codec.decode(f, cb_model) for f in files], codec.decode_batch(files, cb_model)):
        assert torch.equal(alone, batched)


def test_checkerboard_file_with_a_serial_model_of_the_same_weights_is_refused(cb_model):
    serial = zoo.ainn(3, config="tiny")
    serial.load_state_dict({k: v for k, v in cb_model.state_dict().items()}, strict=True)
    serial = codec.prepare_model(serial)
    assert serial._ainn_hash == cb_model._ainn_hash  # the mask is not a weight: only the flag can tell
    blob = codec.compress(Image.fromarray(data.coffee()).crop((0, 0, 64, 64)), cb_model)
    with pytest.raises(ModelMismatchError, match="checkerboard"):
        codec.decode(blob, serial)


def test_fixed_point_checkerboard_context_is_exact(cb_model):
    exact, fast = FixedPointEntropy(cb_model, "cpu", torch.int64), FixedPointEntropy(cb_model, "cpu", torch.float64)
    assert len(exact.context.taps) == 12  # the odd offsets of the 5x5 window
    y = torch.randint(-(2**27) + 1, 2**27, (1, 9, 9, cb_model.M))
    params = torch.randint(-(2**27) + 1, 2**27, (25, 2 * cb_model.M))
    b, i, j = torch.zeros(3, dtype=torch.long), torch.tensor([0, 2, 4]), torch.tensor([1, 3, 2])
    window, at = exact.window_index(b, i, j, (9, 9)), i * 5 + j
    for w in (window, None):
        ref = exact.position_params(y.view(-1, cb_model.M), params, w, at)
        got = fast.position_params(y.view(-1, cb_model.M).double(), params.double(), w, at)
        assert all(torch.equal(r, g.long()) for r, g in zip(ref, got))


def test_compressai_serial_coder_refuses_the_checkerboard(cb_model):
    with pytest.raises(NotImplementedError, match="serial context"):
        copy.deepcopy(cb_model).compress(torch.rand(1, 3, 64, 64))


def test_with_context_carries_the_weights_over():
    from ainn_fast.checkpoint import with_context

    torch.manual_seed(1)
    serial = zoo.ainn(3, config="tiny")
    cb = with_context(serial, "checkerboard")
    assert cb.config.context == "checkerboard" and isinstance(cb.context_prediction, CheckerboardContext)
    s, c = serial.state_dict(), cb.state_dict()
    kept = [k for k in s if k.startswith(("h_s.", "entropy_parameters.", "cfrm.", "inn.")) and not k.endswith("mask")]
    assert kept and all(torch.equal(s[k], c[k]) for k in kept)
    w = serial.context_prediction.weight * cb.context_prediction.mask
    assert torch.equal(c["context_prediction.weight"], w)
    # Taps both masks share keep their values; the rest are zero.
    assert c["context_prediction.weight"][:, :, 1, 2].abs().sum() > 0 and c["context_prediction.weight"][:, :, 2, 1].abs().sum() > 0
    assert c["context_prediction.weight"][:, :, 0, 0].abs().sum() == 0
