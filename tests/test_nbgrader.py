"""nbgrader grades a chapter: student version 0, the solutions full marks, wrong answers 0.

``mvbook assign`` lays out the course and runs nbgrader's ``generate_assignment``; three
submissions of chapter 02 are graded with nbgrader's ``autograde`` (smoke profile).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import nbformat
import pytest
from exercise_answers import WRONG_ANSWERS

from mvbook.assign import autograde, exercises, find_chapters, generate

pytest.importorskip("nbgrader")

ROOT = Path(__file__).resolve().parents[1]
CHAPTER = "02"


def _submit(course: Path, student: str, nb) -> None:
    folder = course / "submitted" / student / "mvbook"
    folder.mkdir(parents=True)
    nbformat.write(nb, str(folder / f"{NAME}.ipynb"))


NAME = find_chapters(ROOT / "notebooks", [CHAPTER])[0].stem


def test_nbgrader_generates_and_grades_a_chapter(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MVBOOK_PROFILE", os.environ.get("MVBOOK_PROFILE", "smoke"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    source_path = ROOT / "notebooks" / f"{NAME}.ipynb"
    source = nbformat.read(str(source_path), as_version=4)
    course = tmp_path / "course"
    (released,) = generate([source_path], course, timeout=600)
    student = nbformat.read(str(released), as_version=4)
    found = exercises(source)
    assert found
    for ex in found:
        cell = student.cells[ex.solution_cell]
        assert "raise NotImplementedError()" in cell.source and "BEGIN SOLUTION" not in cell.source
        assert "BEGIN HIDDEN TESTS" not in student.cells[ex.check_cell].source
        assert student.cells[ex.check_cell].metadata["nbgrader"]["locked"]
    assert "HIDDEN" in "".join(source.cells[ex.check_cell].source for ex in found)

    solved = nbformat.from_dict(student)
    wrong = nbformat.from_dict(nbformat.reads(nbformat.writes(student), as_version=4))
    for ex in found:
        solved.cells[ex.solution_cell].source = source.cells[ex.solution_cell].source
        wrong.cells[ex.solution_cell].source = WRONG_ANSWERS[ex.solution_id][0][1].strip()
    _submit(course, "untouched", student)
    _submit(course, "solution", solved)
    _submit(course, "wrong", wrong)
    scores = autograde(course, timeout=600)
    full = {ex.check_id: ex.points for ex in found}
    zero = {ex.check_id: 0.0 for ex in found}
    with capsys.disabled():
        print(f"\nnbgrader scores of chapter {CHAPTER}: {scores}")
    assert scores["solution"] == full
    assert scores["untouched"] == zero
    assert scores["wrong"] == zero
    shutil.rmtree(course / "autograded", ignore_errors=True)


def test_assign_names_a_missing_chapter_in_one_line(capsys):
    from mvbook.cli import main

    assert main(["assign", "--chapters", "99", "--out", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mvbook: --chapters: no notebook '99' in {ROOT / 'notebooks'}"]
