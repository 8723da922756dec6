"""Loading weights saved by the authors' released code, from the exact key listing."""

import ast
from pathlib import Path

import pytest
import torch

from ainn_fast.convert import ConversionError, convert_official_state_dict, load_official
from ainn_fast.ops import squeeze2x2

DATA = Path(__file__).parent / "data"


def official_state_dict(n: int) -> dict:
    """A synthetic state_dict with exactly the keys, shapes and dtypes of the authors'."""
    sd = {}
    g = torch.Generator().manual_seed(n)
    for line in (DATA / f"official_state_dict_N{n}.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        key, shape, dtype = line.split("\t")
        shape, dtype = ast.literal_eval(shape), getattr(torch, dtype)
        if dtype.is_floating_point:
            sd[key] = 0.01 * torch.randn(shape, generator=g)
        else:
            sd[key] = torch.ones(shape, dtype=dtype)
        if key.endswith("running_var"):
            sd[key] = torch.ones(shape)
    for k in range(1, 5):  # the authors' inv_conv_k is the same module as operations{k}.1
        sd[f"inv.operations{k}.1.weight"] = torch.linalg.qr(torch.randn(sd[f"inv.operations{k}.1.weight"].shape, generator=g))[0]
        sd[f"inv.inv_conv_{k}.weight"] = sd[f"inv.operations{k}.1.weight"].clone()
    return sd


@pytest.mark.parametrize("n, quality", [(192, 8), (128, 3)])
def test_every_official_key_converts_and_loads_strictly(n, quality):
    sd = official_state_dict(n)
    model = load_official(sd, quality)
    mine = model.state_dict()
    converted = convert_official_state_dict(sd)
    assert len(converted) == len(sd) - 4 == len(mine)
    for key, value in converted.items():
        if not key.endswith(("_quantized_cdf", "_offset", "_cdf_length")):
            assert torch.equal(mine[key], value), key


def test_hand_set_weights_land_where_they_act():
    """Level 1, coupling 0: with identity 1x1 conv and silent sub-networks, setting
    H2's output bias to c and G2's to b must give y1 = squeeze(x1) * exp(s(b)) + c on the
    low stream only."""
    sd = official_state_dict(128)
    for key in list(sd):
        if key.startswith("inv.operations1.") and ".conv3." in key:
            sd[key] = torch.zeros_like(sd[key])
    sd["inv.operations1.1.weight"] = torch.eye(12)
    sd["inv.inv_conv_1.weight"] = torch.eye(12)
    c = torch.linspace(-1, 1, 12)
    b = torch.linspace(2, -2, 12)
    sd["inv.operations1.2.H2.conv3.bias"] = c
    sd["inv.operations1.2.G2.conv3.bias"] = b
    model = load_official(sd, 3)
    x1, x2 = torch.rand(1, 3, 8, 6), torch.rand(1, 3, 8, 6)
    with torch.no_grad():
        y1, y2 = model.inn.levels[0](x1, x2)
    scale = torch.exp(2 * torch.sigmoid(b) - 1).view(1, 12, 1, 1)
    torch.testing.assert_close(y1, squeeze2x2(x1) * scale + c.view(1, 12, 1, 1))
    torch.testing.assert_close(y2, squeeze2x2(x2))


def test_converted_model_computes():
    model = load_official(official_state_dict(128), 3).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(out["x_hat"]).all()
    # PDM after inverse level 4 is the authors' denoising3, the low stream's is _1.
    assert model.pdm["4"][0].unet.outc.weight.shape == (192, 192, 1, 1)


def test_unknown_key_is_refused_by_name():
    sd = official_state_dict(128)
    sd["inv.extra_module.weight"] = torch.zeros(1)
    with pytest.raises(ConversionError, match="inv.extra_module.weight"):
        load_official(sd, 3)


def test_missing_key_and_wrong_shape_are_refused_by_name():
    sd = official_state_dict(128)
    del sd["inv.freq_D.conv1x1_l.bias"]
    with pytest.raises(ConversionError, match="fdsm_d.conv1x1_l.bias"):
        load_official(sd, 3)
    sd = official_state_dict(128)
    sd["inv.rdb_last_2.lff.weight"] = torch.zeros(768, 640, 1, 1)
    with pytest.raises(ConversionError, match=r"cfrm.1.lff.weight.*\(768, 640, 1, 1\)"):
        load_official(sd, 3)


def test_width_must_match_the_quality():
    with pytest.raises(ConversionError, match="M=128"):
        load_official(official_state_dict(128), 8)


def test_diverging_alias_is_refused():
    sd = official_state_dict(128)
    sd["inv.inv_conv_2.weight"] = sd["inv.inv_conv_2.weight"] + 1
    with pytest.raises(ConversionError, match="inv.inv_conv_2.weight"):
        convert_official_state_dict(sd)
