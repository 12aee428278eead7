"""irn-serve exchanges RGB images: models whose LR is something else are refused up front,
in one line, before PyTriton or any graph is loaded (runs without the serve extra)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import export_tiny
from irn_trt.runtime.serve import main as serve_main


@pytest.mark.parametrize(
    ("model", "words"),
    [("irn_color", "1-channel grey image"), ("irn_a_x2", "4th channel"),
     ("irn_m_x2", "side code")],
)  # fmt: skip
def test_serve_refuses_lrs_that_are_not_one_rgb_image(
    model: str, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir = export_tiny(model, tmp_path / model, seed=2)
    for extra in ([], ["--write-repository", str(tmp_path / "repo")]):
        assert serve_main([str(model_dir), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "irn-trt-run" in err[0], err
    assert not (tmp_path / "repo").exists()
