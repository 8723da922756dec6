"""Assemble a training set of real photographs from what a Debian machine can reach.

    python -m ainn_fast.photos OUT [--source DIR]

Sources (all photographs; drawings and renders are left out by an explicit allowlist):
- the ``nature/`` photos of Debian's ``mate-backgrounds`` package (12 photos, 1280x1024
  to 2560x1920), fetched with ``apt-get download`` and unpacked with ``dpkg -x`` unless
  ``--source`` points at an unpacked copy;
- matplotlib's sample photo ``grace_hopper.jpg``.
scikit-image's bundled photos are NOT used: they are the evaluation set. Debian's
``plasma-workspace-wallpapers`` is reserved for independent evaluation and never used.

Photos are downscaled by 2 (area filter: halves the JPEG artefacts of the sources) and
written as PNG to OUT/train and OUT/val; two fixed photos go to validation.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

MATE_NATURE = (
    "Aqua.jpg", "Blinds.jpg", "Dune.jpg", "FreshFlower.jpg", "Garden.jpg", "GreenMeadow.jpg",
    "LadyBird.jpg", "RainDrops.jpg", "Storm.jpg", "TwoWings.jpg", "Wood.jpg", "YellowFlower.jpg",
)
VALIDATION = ("Storm.jpg", "FreshFlower.jpg")


def fetch_mate(workdir: Path) -> Path:
    """Download and unpack mate-backgrounds; returns its nature/ folder."""
    subprocess.run(["apt-get", "download", "mate-backgrounds"], cwd=workdir, check=True, capture_output=True)
    deb = next(workdir.glob("mate-backgrounds_*.deb"))
    subprocess.run(["dpkg", "-x", str(deb), str(workdir / "unpacked")], check=True)
    return workdir / "unpacked" / "usr/share/backgrounds/mate/nature"


def _save_downscaled(src: Path, dst: Path) -> None:
    with Image.open(src) as img:
        img = img.convert("RGB")
        img = img.resize((img.width // 2, img.height // 2), Image.Resampling.BOX)
        img.save(dst.with_suffix(".png"))


def build(out: Path, source: Path | None = None) -> tuple[int, int]:
    """Write OUT/train and OUT/val; returns their image counts."""
    (out / "train").mkdir(parents=True, exist_ok=True)
    (out / "val").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        nature = source or fetch_mate(Path(tmp))
        for name in MATE_NATURE:
            _save_downscaled(nature / name, out / ("val" if name in VALIDATION else "train") / name)
    import matplotlib

    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if hopper.exists():
        shutil.copy(hopper, out / "train" / hopper.name)
    return len(list((out / "train").iterdir())), len(list((out / "val").iterdir()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ainn_fast.photos", description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, help="an unpacked mate-backgrounds nature/ folder (else apt-get download)")
    args = p.parse_args(argv)
    n_train, n_val = build(args.out, args.source)
    print(f"{args.out}: {n_train} training and {n_val} validation photos")
    return 0


if __name__ == "__main__":
    sys.exit(main())
