"""The training-set builder: allowlisted photos routed to train/val, downscaled to ~800 px."""

from pathlib import Path

from PIL import Image

from ainn_fast import photos


def test_downscale_factor_brings_the_short_side_near_800():
    assert photos.downscale_factor(2560, 1600) == 2  # mate's largest: 1280x800
    assert photos.downscale_factor(6028, 3391) == 4  # 1507x847
    assert photos.downscale_factor(1365, 1074) == 1
    assert photos.downscale_factor(300, 200) == 1  # never upscaled


def test_build_from_unpacked_packages(tmp_path: Path):
    source = tmp_path / "unpacked"
    for _, folder, names in photos.SOURCES:
        (source / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (1600, 1200), (10, 20, 30)).save(source / folder / name)
    # a drawing shipped beside the photos must not be picked up
    Image.new("RGB", (64, 64)).save(source / "usr/share/backgrounds" / "warty-final-ubuntu.png")

    n_train, n_val = photos.build(tmp_path / "out", source)

    names = [n for _, _, ns in photos.SOURCES for n in ns]
    assert n_val == len(photos.VALIDATION)
    assert n_train == len(names) - len(photos.VALIDATION) + (tmp_path / "out/train/grace_hopper.jpg").exists()
    assert not (tmp_path / "out/train/warty-final-ubuntu.png").exists()
    for name in photos.VALIDATION:
        assert (tmp_path / "out/val" / name).with_suffix(".png").exists()
    with Image.open(tmp_path / "out/train" / Path(names[0]).with_suffix(".png")) as img:
        assert img.size == (800, 600)
