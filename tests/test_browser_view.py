"""How LR files with a side code look in a real browser (issue 14, item 3).

Each LR kind is written by ``irn-trt-run`` from real (tiny, exported) IRN-A and IRN-M
models, opened in headless Chromium on a white page, and the screenshot compared with
the LR's colour pixels. Needs Debian's ``chromium`` (``.ci/run`` installs it where it can);
without it these tests skip with the reason.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import export_tiny, run_cli
from irn_trt.runtime.metrics import psnr
from PIL import Image
from train_support import SET5

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt install chromium)")


def screenshot(image: Path, out: Path) -> np.ndarray:
    """``image`` at its natural size on a white page, as Chromium paints it (HxWx3 uint8)."""
    width, height = Image.open(image).size
    page = out.with_suffix(".html")
    page.write_text(
        '<!doctype html><body style="margin:0;background:#fff">'
        f'<img src="{image.resolve().as_uri()}" style="display:block"></body>'
    )
    cmd = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--force-device-scale-factor=1", "--force-color-profile=srgb",
        f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri(),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    return np.array(Image.open(out).convert("RGB"))[:height, :width]


@pytest.fixture(scope="module")
def bird(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "bird.png"
    Image.open(SET5 / "bird.png").convert("RGB").crop((40, 40, 168, 136)).save(path)
    return path


@pytest.mark.parametrize(
    ("model", "options"),
    [
        ("irn_a_x2", ["--alpha-code", "chunk"]),  # the default form
        ("irn_m_x2", []),
        ("irn_a_x2", ["--alpha-code", "png-alpha"]),  # the paper's RGBA form
    ],
)
def test_lr_files_in_a_browser(model: str, options: list[str], bird: Path, tmp_path: Path) -> None:
    model_dir = export_tiny(model, tmp_path / model, seed=5)
    out = tmp_path / "out"
    assert run_cli(str(bird), "-o", str(out), "--model-dir", str(model_dir), *options) == 0
    lr_path = out / "bird_lr.png"
    lr = Image.open(lr_path)
    colours = np.array(lr.convert("RGB"))
    shown = screenshot(lr_path, tmp_path / "shot.png")
    if lr.mode == "RGBA":
        # The paper's form: the browser blends the code into the page. That is what a
        # viewer shows, and it is not the picture.
        alpha = np.array(lr)[..., 3:].astype(np.float64) / 255.0
        blended = colours * alpha + 255.0 * (1.0 - alpha)
        assert psnr(shown, np.round(blended).astype(np.uint8)) > 40.0
        assert psnr(shown, colours) < 30.0
    else:
        # The chunk forms: the browser shows exactly the LR's colours.
        assert lr.mode == "RGB"
        assert np.array_equal(shown, colours)
