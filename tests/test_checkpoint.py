"""Checkpoints: what save_model writes, load_model rebuilds, with an ordinary file mode."""

import os
import stat

import pytest
import torch

from ainn_fast import zoo
from ainn_fast.checkpoint import export_weights, is_derived, load_model, save_model, with_cfrm_layers


def test_round_trip_and_fp16_export(tmp_path, tiny_codec_model):
    path = tmp_path / "w.safetensors"
    save_model(tiny_codec_model, path)
    loaded = load_model(path)
    assert (loaded.quality, loaded.metric) == (tiny_codec_model.quality, tiny_codec_model.metric)
    want = tiny_codec_model.state_dict()
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, want[key]), key
    export_weights(path, tmp_path / "w16.safetensors")
    for key, value in load_model(tmp_path / "w16.safetensors").state_dict().items():
        if is_derived(key):  # CDF tables are recomputed from the rounded weights
            continue
        # fp16 storage: each weight within half precision's rounding of the original
        torch.testing.assert_close(value, want[key], rtol=1e-3, atol=1e-4, check_dtype=False, msg=key)


def test_files_get_the_umask_mode_not_0600(tmp_path, tiny_codec_model):
    # safetensors alone creates 0600 files: unreadable by the rest of a cluster group.
    old = os.umask(0o022)
    try:
        save_model(tiny_codec_model, tmp_path / "a.safetensors")
        export_weights(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    finally:
        os.umask(old)
    for name in ("a.safetensors", "b.safetensors"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644


def test_with_cfrm_layers_grows_the_recovery_without_changing_the_model():
    torch.manual_seed(2)
    small = zoo.ainn(6, config="tiny").eval()
    grown = with_cfrm_layers(small, 3).eval()
    assert len(grown.cfrm[0].layers) == 3 and grown.config.cfrm_layers == 3
    assert sum(p.numel() for p in grown.parameters()) > sum(p.numel() for p in small.parameters())
    x = torch.rand(1, 3, 64, 128)
    with torch.no_grad():
        a, b = small(x), grown(x)
    # Exactly the same computation: the new layers' features enter lff through zero weights.
    assert torch.equal(a["x_hat"], b["x_hat"])
    assert all(torch.equal(a["likelihoods"][k], b["likelihoods"][k]) for k in a["likelihoods"])
    # The new layers are trainable: one backward step reaches them through lff.
    grown.train()
    out = grown(x)
    ((out["x_hat"] - x) ** 2).mean().backward()
    assert grown.cfrm[0].lff.weight.grad[:, -grown.M :].abs().sum() > 0
    with pytest.raises(ValueError, match="cannot remove"):
        with_cfrm_layers(grown, 1)
