"""Checkpoints: what save_model writes, load_model rebuilds, with an ordinary file mode."""

import os
import stat

import torch

from ainn_fast.checkpoint import export_weights, is_derived, load_model, save_model


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
