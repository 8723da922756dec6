"""The shipped weights load, and code scikit-image's astronaut photo at the bpp and PSNR
that the README states (its table between the pretrained-table markers)."""

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from ainn_fast import codec, zoo

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_rows() -> list[tuple[int, float, float]]:
    text = README.read_text()
    table = text.split("<!-- pretrained-table -->")[1]
    rows = re.findall(r"^\| *(\d) *\| *([\d.]+) *\| *([\d.]+) *\|", table, flags=re.M)
    return [(int(q), float(b), float(p)) for q, b, p in rows]


def test_readme_states_every_shipped_quality():
    shipped = sorted(q for c, m, q in zoo.pretrained_available() if (c, m) == ("lite", "mse"))
    assert len(shipped) >= 3
    assert sorted(q for q, _, _ in readme_rows()) == shipped


@pytest.mark.parametrize("row", readme_rows(), ids=lambda r: f"q{r[0]}")
def test_shipped_weights_code_the_astronaut_as_the_readme_says(row):
    quality, bpp_stated, psnr_stated = row
    model = codec.prepare_model(zoo.ainn(quality, "mse", "lite", pretrained=True))
    img = Image.fromarray(data.astronaut())
    blob = codec.compress(img, quality=quality)  # the default model of that quality
    assert blob == codec.compress(img, model)  # is the shipped one
    out = codec.decompress(blob)
    a, b = np.asarray(img, dtype=np.float64), np.asarray(out, dtype=np.float64)
    psnr = 10 * np.log10(255**2 / np.mean((a - b) ** 2))
    bpp = 8 * len(blob) / (512 * 512)
    assert bpp == pytest.approx(bpp_stated, abs=0.005)
    assert psnr == pytest.approx(psnr_stated, abs=0.05)


def test_shipped_files_are_small():
    total = sum(p.stat().st_size for p in zoo.WEIGHTS_DIR.glob("*.safetensors"))
    assert total < 60 * 2**20
