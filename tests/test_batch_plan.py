"""The batch planner: the naming rule, and properties over random batches."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from irn_trt.runtime.batch import OUTPUT_KINDS, Source, plan_batch


def _outputs(plan) -> list[Path]:
    return [p for job in plan.jobs for p in job.outputs.values()]


def test_naming_rule(tmp_path: Path) -> None:
    out = tmp_path / "out"
    srcs = [
        Source(tmp_path / "a" / "img.png", "down"),
        Source(tmp_path / "b" / "img.png", "down"),
        Source(tmp_path / "pic.png", "roundtrip"),
        Source(tmp_path / "pic.jpg", "roundtrip"),
        Source(tmp_path / "x_lr.png", "up"),
        Source(tmp_path / "shots" / "deep" / "y.png", "down", scanned_from=tmp_path / "shots"),
    ]
    plan = plan_batch(srcs, out)
    assert plan.conflicts == []
    got = [[str(p.relative_to(out)) for p in job.outputs.values()] for job in plan.jobs]
    assert got == [
        ["a/img_lr.png"],
        ["b/img_lr.png"],
        ["pic.png_lr.png", "pic.png_roundtrip.png"],
        ["pic.jpg_lr.png", "pic.jpg_roundtrip.png"],
        ["x_hr.png"],
        ["deep/y_lr.png"],
    ]


def test_inputs_existing_files_and_named_outputs(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a_lr.png").write_bytes(b"x")
    srcs = [Source(tmp_path / "a.png", "down"), Source(tmp_path / "a_lr.png", "up")]
    plan = plan_batch(srcs, tmp_path)
    assert [j.source.path.name for j in plan.jobs] == ["a_lr.png"]
    assert plan.conflicts == [
        f"{tmp_path / 'a.png'}: output {tmp_path / 'a_lr.png'} is an input of this batch; "
        "choose another -o"
    ]
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a_lr.png").write_bytes(b"old")
    one = [Source(tmp_path / "a.png", "down")]
    assert "exists (pass --overwrite" in plan_batch(one, tmp_path / "out").conflicts[0]
    assert plan_batch(one, tmp_path / "out", overwrite=True).jobs
    assert plan_batch(one, tmp_path / "out", skip_existing=True).skipped
    named = tmp_path / "out" / "a_lr.png"  # the user named it: theirs to replace
    assert plan_batch(one, tmp_path / "out", out_file=named).conflicts == []
    reserved = {str(tmp_path / "out" / "a_lr.png"): "--json summary"}
    plan = plan_batch(one, tmp_path / "out", overwrite=True, reserved=reserved)
    assert plan.conflicts and "also the --json summary" in plan.conflicts[0]


@pytest.mark.parametrize("seed", range(150))
def test_random_batches_never_lose_a_file(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    folders = ["", "a", "b", "a/sub", "out"]
    stems = ["img", "img_lr", "pic", "a", "a_lr", "x.y"]
    exts = [".png", ".jpg", ".PNG"]
    sources: list[Source] = []
    seen: set[Path] = set()
    for _ in range(rng.randint(1, 9)):
        folder = rng.choice(folders)
        path = tmp_path / folder / f"{rng.choice(stems)}{rng.choice(exts)}"
        if path in seen:  # the CLI runs a file once
            continue
        seen.add(path)
        scanned = tmp_path / folder.split("/")[0] if folder and rng.random() < 0.4 else None
        sources.append(Source(path, rng.choice(list(OUTPUT_KINDS)), scanned))
    for src in sources:  # some inputs exist on disk, as do some earlier outputs
        src.path.parent.mkdir(parents=True, exist_ok=True)
        src.path.write_bytes(b"input")
    out = tmp_path / rng.choice(["out", "", "a"])
    if rng.random() < 0.3:
        (out / "img_lr.png").parent.mkdir(parents=True, exist_ok=True)
        (out / "img_lr.png").write_bytes(b"earlier")
    overwrite = rng.random() < 0.3
    plan = plan_batch(sources, out, overwrite=overwrite)

    outputs = _outputs(plan)
    assert len(set(outputs)) == len(outputs), "two jobs write one file"
    inputs = {s.path for s in sources}
    assert not inputs & set(outputs), "an output replaces an input"
    if not overwrite:
        assert not [p for p in outputs if p.exists()], "an existing file would be replaced"
    # Every source is either planned or named in a conflict line.
    planned = {j.source.path for j in plan.jobs}
    for src in sources:
        assert src.path in planned or any(c.startswith(f"{src.path}:") for c in plan.conflicts)
    # Deterministic: the same batch gives the same plan.
    again = plan_batch(sources, out, overwrite=overwrite)
    assert _outputs(again) == outputs and again.conflicts == plan.conflicts
