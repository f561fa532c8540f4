"""The exercises' check cells reject wrong answers and accept the solutions.

For each chapter the notebook runs once (smoke profile) with extra cells after every check
cell: each prepared wrong answer of :mod:`exercise_answers` replaces the solution, the check
cell runs (hidden tests included) and must fail; then the solution runs again. The solutions
themselves pass because the notebook's own check cells run as usual.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import nbformat
import pytest
from exercise_answers import WRONG_ANSWERS

from mvbook.assign import check_metadata, exercises

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = {
    "01": "01_cameras_and_projection",
    "02": "02_epipolar_geometry",
    "03": "03_triangulation",
    "04": "04_heatmaps_and_soft_argmax",
    "05": "05_multiview_studio",
    "10": "10_learnable_triangulation",
    "11": "11_weakly_supervised_25d",
    "20": "20_mcss",
    "30": "30_keypoint_discovery",
    "40": "40_dense_keypoints",
    "50": "50_selfpose3d",
}
MARKER = "MVBOOK-EXERCISE-OUTCOMES "


def _nb(ch: str):
    return nbformat.read(str(NOTEBOOKS / f"{CHAPTERS[ch]}.ipynb"), as_version=4)


@pytest.mark.parametrize("ch", sorted(CHAPTERS))
def test_exercises_carry_nbgrader_metadata(ch):
    nb = _nb(ch)
    assert check_metadata(nb) == []
    found = exercises(nb)
    assert found, f"chapter {ch} has no exercise"
    for ex in found:
        assert ex.chapter == ch
        assert WRONG_ANSWERS.get(ex.solution_id), f"{ex.solution_id}: no prepared wrong answer"
        check = nb.cells[ex.check_cell].source
        tree = ast.parse(check)
        asserts = [n for n in ast.walk(tree) if isinstance(n, ast.Assert)]
        assert asserts, f"{ex.check_id}: the check cell asserts nothing"
        bare = [n.lineno for n in asserts if n.msg is None]
        assert not bare, f"{ex.check_id}: assert without a message on check lines {bare}"


def test_every_prepared_answer_belongs_to_an_exercise():
    ids = {ex.solution_id for ch in CHAPTERS for ex in exercises(_nb(ch))}
    assert set(WRONG_ANSWERS) <= ids


def test_metadata_problems_are_named():
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1\n### BEGIN SOLUTION\nx = 2\n### END SOLUTION"),
                nbformat.v4.new_code_cell("assert x == 2, 'x'")]
    assert check_metadata(nb) == ["cell 0: has a solution but no nbgrader metadata"]
    nb.cells[0].metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                                        "grade_id": "ch01-ex1-solution", "schema_version": 3}
    nb.cells[1].metadata["nbgrader"] = {"grade": True, "solution": False, "locked": False,
                                        "points": 0, "grade_id": "ch01-ex1-solution",
                                        "schema_version": 3}
    problems = check_metadata(nb)
    assert "cell 1: grade cell is not locked" in problems
    assert "cell 1: grade cell has points 0, expected > 0" in problems
    assert any("repeats cell 0" in p for p in problems)


def _probe_cell(grade_id: str, label: str, answer: str, check: str) -> str:
    return (
        f"try:\n"
        f"    exec(compile({answer!r}, '<wrong answer>', 'exec'), globals())\n"
        f"    exec(compile({check!r}, '<check {grade_id}>', 'exec'), globals())\n"
        f"except Exception as _mvb_err:\n"
        f"    _mvb_outcomes.append(dict(id={grade_id!r}, label={label!r}, rejected=True,\n"
        f"                              error=type(_mvb_err).__name__, message=str(_mvb_err)))\n"
        f"else:\n"
        f"    _mvb_outcomes.append(dict(id={grade_id!r}, label={label!r}, rejected=False,\n"
        f"                              error=None, message=''))\n"
    )


def probing_notebook(nb):
    """A copy of ``nb`` that tries every prepared wrong answer after each check cell."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    found = exercises(nb)
    cells = list(nb.cells)
    new = [nbformat.v4.new_code_cell("_mvb_outcomes = []")]
    by_check = {ex.check_cell: ex for ex in found}
    for i, cell in enumerate(cells):
        cell.metadata.pop("nbgrader", None)
        new.append(cell)
        ex = by_check.get(i)
        if ex is None:
            continue
        solution, check = cells[ex.solution_cell].source, cell.source
        for label, answer in WRONG_ANSWERS[ex.solution_id]:
            new.append(nbformat.v4.new_code_cell(_probe_cell(ex.check_id, label, answer, check)))
        new.append(nbformat.v4.new_code_cell(solution))  # the solution again, for what follows
    new.append(nbformat.v4.new_code_cell(f"import json\nprint({MARKER!r} + json.dumps(_mvb_outcomes))"))
    nb.cells = new
    return nb


@pytest.mark.parametrize("ch", sorted(CHAPTERS))
def test_checks_reject_wrong_answers(ch, tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("MVBOOK_PROFILE", os.environ.get("MVBOOK_PROFILE", "smoke"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = probing_notebook(_nb(ch))
    client = NotebookClient(nb, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises on any error: a solution rejected by its own check included
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    outcomes = json.loads(text.split(MARKER, 1)[1])
    expected = {(gid.replace("-solution", "-check"), label)
                for gid, answers in WRONG_ANSWERS.items() if gid.startswith(f"ch{ch}-")
                for label, _ in answers}
    assert {(o["id"], o["label"]) for o in outcomes} == expected
    accepted = [f"{o['id']}: {o['label']}" for o in outcomes if not o["rejected"]]
    assert not accepted, "checks accepted wrong answers: " + "; ".join(accepted)
    silent = [f"{o['id']}: {o['label']}" for o in outcomes
              if o["error"] == "AssertionError" and not o["message"].strip()]
    assert not silent, "rejected without saying what was expected: " + "; ".join(silent)
    (tmp_path / "outcomes.json").write_text(json.dumps(outcomes, indent=1))
    for o in outcomes:
        print(f"{o['id']} rejects {o['label']!r}: {o['error']}: {o['message'].splitlines()[0][:160]}")
