"""Planning a batch before it runs: every output path known, no collisions, nothing clobbered.

``irn-trt-run`` turns its inputs into a :class:`BatchPlan` before any
inference. The naming rule, applied in this order:

1. ``<stem>_lr.png`` (down), ``<stem>_hr.png`` (up; a trailing ``_lr`` of the
   stem is dropped), ``<stem>_lr.png`` + ``<stem>_roundtrip.png`` (roundtrip),
   in the output folder; files found by scanning an input folder keep their
   sub-folder below it. Models that decolorize (IRN_color) write ``<stem>_gray.png``
   (decolorize) and ``<stem>_color.png`` (colorize) instead (``OUTPUT_SUFFIXES``).
   The LR's extension follows its format (``--lr-format``: ``<stem>_lr.webp``,
   ``<stem>_lr.jpg``, ...; ``lr_extension``), known here, before anything runs.
2. Outputs of inputs from different folders that would share a path go to
   sub-folders mirroring their source folders below the colliding sources'
   common folder (``a/img.png``, ``b/img.png`` -> ``OUT/a/img_lr.png``,
   ``OUT/b/img_lr.png``).
3. Outputs of inputs in one folder that differ only by extension keep the
   extension in the stem (``pic.png``, ``pic.jpg`` -> ``pic.png_lr.png``,
   ``pic.jpg_lr.png``).

What is still in conflict after that is refused, one line each: an output that
is an input of the batch, the same output twice, or an existing file that the
user did not name (unless ``overwrite``; ``skip_existing`` drops jobs whose
outputs all exist). Torch-free and free of I/O except ``exists`` checks.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

__all__ = ["OUTPUT_KINDS", "OUTPUT_SUFFIXES", "Source", "PlannedJob", "BatchPlan", "plan_batch"]

#: The outputs each mode writes, in order.
OUTPUT_KINDS: dict[str, tuple[str, ...]] = {
    "down": ("lr",),
    "up": ("hr",),
    "roundtrip": ("lr", "roundtrip"),
}
#: The suffix of each output kind, per task of the model (its manifest's ``task``).
OUTPUT_SUFFIXES: dict[str, dict[str, str]] = {
    "rescale": {"lr": "_lr", "hr": "_hr", "roundtrip": "_roundtrip"},
    "decolorize": {"lr": "_gray", "hr": "_color", "roundtrip": "_roundtrip"},
}


@dataclass(frozen=True)
class Source:
    """One input file, the mode it runs in, and the folder input it was found in (if any)."""

    path: Path
    mode: str  # "down" | "up" | "roundtrip"
    scanned_from: Path | None = None  # the input folder whose scan found it


@dataclass
class PlannedJob:
    source: Source
    outputs: dict[str, Path]  # kind ("lr", "hr", "roundtrip") -> output file


@dataclass
class BatchPlan:
    jobs: list[PlannedJob] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # one line each; non-empty = refuse
    skipped: list[PlannedJob] = field(default_factory=list)  # all outputs exist (skip_existing)


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


@dataclass
class _Name:
    folder: Path
    stem: str  # before the kind's suffix
    suffixes: dict[str, str]
    named_by_user: bool = False
    lr_extension: str = ".png"

    def path(self, kind: str) -> Path:
        if self.named_by_user:
            return self.folder / self.stem
        ext = self.lr_extension if kind == "lr" else ".png"
        return self.folder / f"{self.stem}{self.suffixes[kind]}{ext}"


def _default_stem(src: Path, kind: str, suffixes: dict[str, str]) -> str:
    stem = src.stem
    if kind == "hr" and stem.endswith(suffixes["lr"]):
        stem = stem[: -len(suffixes["lr"])]
    return stem


def plan_batch(
    sources: list[Source],
    out_dir: Path,
    out_file: Path | None = None,
    overwrite: bool = False,
    skip_existing: bool = False,
    reserved: dict[str, str] | None = None,
    task: str = "rescale",
    lr_extension: str = ".png",
) -> BatchPlan:
    """Output paths for every source; see the module docstring for the rule.

    ``out_file`` (one source only) is the file the user named for the main
    output (it may replace an existing file). ``reserved`` maps other paths the
    run writes (the JSON summary) to a label; outputs must avoid them too.
    ``task`` (the model's) picks the suffixes (``OUTPUT_SUFFIXES``); ``lr_extension``
    is the LR file's (``.png`` unless ``--lr-format`` says otherwise).
    """
    suffixes = OUTPUT_SUFFIXES[task]
    if out_file is not None and len(sources) != 1:
        raise ValueError("out_file needs exactly one source")
    # names[i][kind] -> _Name
    names: list[dict[str, _Name]] = []
    for src in sources:
        folder = out_dir
        if src.scanned_from is not None:
            folder = out_dir / src.path.parent.relative_to(src.scanned_from)
        entry = {}
        for kind in OUTPUT_KINDS[src.mode]:
            main_kind = OUTPUT_KINDS[src.mode][-1]
            if out_file is not None and kind == main_kind:
                entry[kind] = _Name(out_file.parent, out_file.name, suffixes, named_by_user=True)
            else:
                base = out_file.parent if out_file is not None else folder
                stem = _default_stem(src.path, kind, suffixes)
                entry[kind] = _Name(base, stem, suffixes, lr_extension=lr_extension)
        names.append(entry)

    def collisions() -> list[list[tuple[int, str]]]:
        groups: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for i, entry in enumerate(names):
            for kind, name in entry.items():
                groups[_key(name.path(kind))].append((i, kind))
        return [g for g in groups.values() if len({i for i, _ in g}) > 1]

    # Rule 2: different source folders -> mirror them below their common folder.
    for group in collisions():
        members = sorted({i for i, _ in group})
        parents = {i: Path(os.path.abspath(sources[i].path.parent)) for i in members}
        if len(set(parents.values())) < 2:
            continue
        common = Path(os.path.commonpath([str(p) for p in parents.values()]))
        for i, kind in group:
            name = names[i][kind]
            if not name.named_by_user:
                names[i][kind] = replace(name, folder=name.folder / parents[i].relative_to(common))
    # Rule 3: same folder, different extension -> keep the extension in the stem.
    for group in collisions():
        for i, kind in group:
            name = names[i][kind]
            if not name.named_by_user:
                names[i][kind] = replace(name, stem=sources[i].path.name)

    plan = BatchPlan()
    inputs = {_key(s.path): s.path for s in sources}
    reserved = {_key(Path(p)): label for p, label in (reserved or {}).items()}
    seen: dict[str, Path] = {}
    for src, entry in zip(sources, names, strict=True):
        outputs = {kind: name.path(kind) for kind, name in entry.items()}
        problems = []
        for path in outputs.values():
            key = _key(path)
            if key == _key(src.path):
                problems.append(f"{src.path}: output {path} would overwrite the input")
            elif key in inputs:
                problems.append(
                    f"{src.path}: output {path} is an input of this batch; choose another -o"
                )
            elif key in reserved:
                problems.append(f"{src.path}: output {path} is also the {reserved[key]}")
            elif key in seen:
                problems.append(f"{src.path}: output {path} is also the output of {seen[key]}")
            seen.setdefault(key, src.path)
        job = PlannedJob(src, outputs)
        existing = [
            p
            for kind, p in outputs.items()
            if not entry[kind].named_by_user and (p.exists() or p.is_symlink())
        ]
        if skip_existing and not problems and existing and len(existing) == len(outputs):
            plan.skipped.append(job)
            continue
        if existing and not overwrite:
            problems.extend(
                f"{src.path}: output {p} exists (pass --overwrite to replace it"
                f"{', --skip-existing to skip such inputs' if not skip_existing else ''})"
                for p in existing
                if _key(p) not in inputs  # already said: it is an input
            )
        if problems:
            plan.conflicts.extend(problems)
        else:
            plan.jobs.append(job)
    return plan
