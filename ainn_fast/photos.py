"""Assemble a training set of real photographs from what a Debian machine can reach.

    python -m ainn_fast.photos OUT [--source DIR]

Sources (photographs only; drawings and renders are left out by explicit allowlists):
- the ``nature/`` photos of Debian's ``mate-backgrounds`` (12 photos, 1280x1024 to
  2560x1920; mostly smooth, shallow depth of field);
- the photographs among ``lomiri-wallpapers-16.04`` and ``lomiri-wallpapers-20.04``
  (Ubuntu wallpaper-contest photos, 1365x1074 to 6028x3391: foliage, rock, mountains,
  animals, objects; the textures the mate set lacks);
- matplotlib's sample photo ``grace_hopper.jpg``.
Packages are fetched with ``apt-get download`` and unpacked with ``dpkg -x`` unless
``--source`` names a folder where they are already unpacked (its ``usr/share/...``).
scikit-image's bundled photos are NOT used: they are the evaluation set. Debian's
``plasma-workspace-wallpapers`` is reserved for independent evaluation and never used.

Each photo is downscaled by the integer factor that brings its shorter side nearest to
800 pixels (area filter): that averages away the sources' JPEG artefacts and sensor
noise and packs more texture into each training crop. Written as PNG to OUT/train and
OUT/val; three fixed photos go to validation.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

# (Debian package, folder inside it, photographs to take from it)
SOURCES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mate-backgrounds", "usr/share/backgrounds/mate/nature", (
        "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg",
        "GreenMeadow.jpg", "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg",
        "Wood.jpg", "YellowFlower.jpg",
    )),
    ("lomiri-wallpapers-16.04", "usr/share/backgrounds", (
        "Bridge_by_Sander_Klootwijk.jpg", "Dragonfly_by_Bolly.jpg",
        "Picture_0B_by_freespace.jpg", "Picture_1A_by_freespace.jpg",
        "Wine_by_Jakkub_Mede.jpg", "aitzgorri_by_Aitzol_Berasategi.jpg",
        "free_by_Peter_Nerlich.jpg", "friends_by_Aitzol_Berasategi.jpg",
        "greentock_by_Peter_Nerlich.jpg", "life_by_Aitzol_Berasategi.jpg",
        "picosdeeuropa_by_Aitzol_Berasategi.jpg", "seeding_by_Clements_Engelhardt.jpg",
        "sunset_by_Aitzol_Berasategi.jpg",
    )),
    ("lomiri-wallpapers-20.04", "usr/share/backgrounds", (
        "Infinite-Sea_by_Aury88.jpg", "Kleiber_by_Lukas_Baubkus.jpg",
    )),
)
VALIDATION = ("Storm.jpg", "FreshFlower.jpg", "life_by_Aitzol_Berasategi.jpg")
TARGET_SHORT_SIDE = 800


def fetch(packages: list[str], workdir: Path) -> Path:
    """Download and unpack Debian packages into workdir/unpacked; returns that root."""
    subprocess.run(["apt-get", "download", *packages], cwd=workdir, check=True, capture_output=True)
    root = workdir / "unpacked"
    for deb in sorted(workdir.glob("*.deb")):
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def downscale_factor(width: int, height: int) -> int:
    return max(1, round(min(width, height) / TARGET_SHORT_SIDE))


def _save_downscaled(src: Path, dst: Path) -> None:
    with Image.open(src) as img:
        img = img.convert("RGB")
        f = downscale_factor(img.width, img.height)
        img = img.resize((img.width // f, img.height // f), Image.Resampling.BOX)
        img.save(dst.with_suffix(".png"))


def build(out: Path, source: Path | None = None) -> tuple[int, int]:
    """Write OUT/train and OUT/val; returns their image counts."""
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        root = source or fetch([pkg for pkg, _, _ in SOURCES], Path(tmp))
        for _, folder, names in SOURCES:
            for name in names:
                split = "val" if name in VALIDATION else "train"
                _save_downscaled(root / folder / name, out / split / name)
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        shutil.copy(hopper, out / "train" / hopper.name)
    return len(list((out / "train").iterdir())), len(list((out / "val").iterdir()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ainn_fast.photos", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, help="a folder where the packages are unpacked (else apt-get download)")
    args = p.parse_args(argv)
    n_train, n_val = build(args.out, args.source)
    print(f"{args.out}: {n_train} training and {n_val} validation photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
