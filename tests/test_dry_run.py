"""Dry runs of chapters 10 and 11's full profiles on converted fixture frames.

``mvbook report --profile full -p dry_run=true`` runs a whole chapter as a GPU machine would,
on a miniature Human3.6M written in the dataset's real on-disk layout (lens distortion
included) and converted by ``mvbook.data.h36m``. Chapter 10: the unfrozen backbone, the
volumetric cube around the algebraic pelvis, the authors' V2V layout, the per-group learning
rates, the main evaluation streamed chunk by chunk over every test frame and every measurement
cell, with one step per stage on two frames (a 32^3 cube; ``test_full_size.py`` runs 64^3).
Chapter 11: the full profile's ResNet-18-shaped 2.5D network trained from scratch through its
three stages (2D-only, weakly and fully supervised) on the chapter's subject splits, and every
measurement cell. A change that breaks a full profile fails here instead of on the reviewer's GPU.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from mvbook.data import h36m

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _dry_run(out, chapter: str, data) -> set[str]:
    """``mvbook report --profile full --only CHAPTER -p dry_run=true`` on converted frames (from
    scratch, on the CPU); checks the run and returns the names of the recorded results."""
    cmd = [sys.executable, "-m", "mvbook", "report", "--profile", "full", "--only", chapter,
           "--notebooks", str(NOTEBOOKS), "--out", str(out), "--no-html",
           "-p", f"data={data}", "-p", "pretrained=none", "-p", "dry_run=true", "-p", "device=cpu"]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["profile"] == "full"
    rows = results["results"]
    assert all(r["data"] == "h36m" for r in rows if r.get("data"))
    return {r["name"] for r in rows}

def test_chapter_10_full_profile_runs_end_to_end_on_converted_frames(tmp_path):
    h36m.write_fixture(tmp_path / "raw", subjects=("S1", "S9"), num_frames=6, size=(96, 96))
    # 4 training frames (2 held), 2 test frames (1 held; the main evaluation streams both)
    data = h36m.convert(tmp_path / "raw", tmp_path / "h36m", subjects=["S1", "S9"], train_step=3,
                        test_step=6, image_size=(96, 96), progress=False)
    out = tmp_path / "report"
    names = _dry_run(out, "10", data)
    assert "MPJPE root-relative, volumetric (softmax)" in names
    executed = next(out.glob("10_*.ipynb")).read_text()
    assert "main evaluation: 2 test frames, cropped 1 at a time" in executed  # streamed


def test_chapter_11_full_profile_runs_end_to_end_on_converted_frames(tmp_path):
    subjects = ("S1", "S5", "S6", "S7", "S8", "S9", "S11")  # the chapter's 2D, multiview and test splits
    h36m.write_fixture(tmp_path / "raw", subjects=subjects, stems=("Directions 1",), num_frames=4,
                       size=(96, 96))
    data = h36m.convert(tmp_path / "raw", tmp_path / "h36m", subjects=list(subjects), train_step=2,
                        test_step=2, image_size=(96, 96), progress=False)
    names = _dry_run(tmp_path / "report", "11", data)
    assert {"MPJPE weakly supervised", "PA-MPJPE fully supervised"} <= names
