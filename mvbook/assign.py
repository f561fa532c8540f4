"""Course assignments from the book's exercises, with nbgrader: ``mvbook assign``.

Every chapter ends with exercises. Each exercise is two cells with nbgrader metadata
(schema 3):

- a **solution cell** (``solution: true``, ``grade: false``, ``grade_id`` ``chNN-exK-solution``)
  whose answer sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` lines;
- the **check cell** right after it (``grade: true``, ``locked: true``, ``points``, ``grade_id``
  ``chNN-exK-check``): asserts that compare the answer with a reference the student cannot
  guess, each with a message saying what was expected. The strongest references sit between
  ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS``: students do not see them, nbgrader
  restores them when it grades.

:func:`exercises` lists the exercises of a notebook and :func:`check_metadata` validates them.
:func:`generate` lays out an nbgrader course (``source/<assignment>/``) from chapters and runs
nbgrader's own ``generate_assignment`` into ``release/<assignment>/``: the student notebooks,
with each solution replaced by ``raise NotImplementedError()`` and the hidden tests removed.
:func:`autograde` grades submissions placed under ``submitted/<student>/<assignment>/`` with
nbgrader's ``autograde`` and returns the points per student and check cell.

Command line::

    mvbook assign --chapters 01,03 --out course      # course/release/mvbook/*.ipynb for students
    mvbook assign --grade course                     # grade course/submitted/*/mvbook/

nbgrader comes with the ``test`` extra (``pip install -e ".[test]"``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ASSIGNMENT = "mvbook"
SCHEMA_VERSION = 3
_GRADE_ID = re.compile(r"^ch(\d\d)-ex(\d+)-(solution|check)$")
_CHAPTER = re.compile(r"^(\d\d)_.+\.ipynb$")


class AssignError(Exception):
    """A problem with the exercises or the course folder (reported in one line, exit 2)."""


@dataclass(frozen=True)
class Exercise:
    """One exercise of a notebook: its solution cell and its check cell (cell indices)."""

    chapter: str
    number: int
    solution_cell: int
    check_cell: int
    points: float

    @property
    def solution_id(self) -> str:
        return f"ch{self.chapter}-ex{self.number}-solution"

    @property
    def check_id(self) -> str:
        return f"ch{self.chapter}-ex{self.number}-check"


def _read(nb: Any) -> Any:
    if isinstance(nb, (str, os.PathLike)):
        import nbformat

        return nbformat.read(os.fspath(nb), as_version=4)
    return nb


def _source(cell: Mapping[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def check_metadata(nb: Any) -> list[str]:
    """Problems with a notebook's nbgrader metadata, one line each; ``[]`` when valid.

    Every code cell with ``### BEGIN SOLUTION`` must be an nbgrader solution cell followed by a
    locked grade cell with positive points; every ``grade_id`` is unique and follows
    ``chNN-exK-solution`` / ``chNN-exK-check``; schema version 3; the solution markers pair up.
    """
    nb = _read(nb)
    problems = []
    seen: dict[str, int] = {}
    cells = nb.get("cells", [])
    for i, cell in enumerate(cells):
        meta = (cell.get("metadata") or {}).get("nbgrader")
        src = _source(cell)
        has_solution = "### BEGIN SOLUTION" in src
        if has_solution and src.count("### BEGIN SOLUTION") != src.count("### END SOLUTION"):
            problems.append(f"cell {i}: unbalanced BEGIN/END SOLUTION lines")
        if "### BEGIN HIDDEN TESTS" in src and not (meta or {}).get("grade"):
            problems.append(f"cell {i}: hidden tests outside a grade cell")
        if meta is None:
            if has_solution:
                problems.append(f"cell {i}: has a solution but no nbgrader metadata")
            continue
        gid = meta.get("grade_id")
        if meta.get("schema_version") != SCHEMA_VERSION:
            problems.append(f"cell {i}: nbgrader schema_version {meta.get('schema_version')!r}, expected 3")
        if not isinstance(gid, str) or not _GRADE_ID.match(gid):
            problems.append(f"cell {i}: grade_id {gid!r} is not chNN-exK-solution/check")
        elif gid in seen:
            problems.append(f"cell {i}: grade_id {gid!r} repeats cell {seen[gid]}")
        else:
            seen[gid] = i
        if meta.get("solution"):
            if not has_solution and cell.get("cell_type") == "code":
                problems.append(f"cell {i}: solution cell without ### BEGIN SOLUTION")
            nxt = cells[i + 1] if i + 1 < len(cells) else {}
            nmeta = (nxt.get("metadata") or {}).get("nbgrader") or {}
            if not nmeta.get("grade"):
                problems.append(f"cell {i}: the solution cell is not followed by a grade cell")
        if meta.get("grade"):
            if cell.get("cell_type") != "code":
                problems.append(f"cell {i}: grade cell is not a code cell")
            if not meta.get("locked"):
                problems.append(f"cell {i}: grade cell is not locked")
            points = meta.get("points")
            if not isinstance(points, (int, float)) or points <= 0:
                problems.append(f"cell {i}: grade cell has points {points!r}, expected > 0")
            if has_solution:
                problems.append(f"cell {i}: grade cell holds a solution")
    return problems


def exercises(nb: Any) -> list[Exercise]:
    """The exercises of a notebook (path or nbformat node), in order; invalid metadata raises
    :class:`AssignError` naming the cell."""
    nb = _read(nb)
    problems = check_metadata(nb)
    if problems:
        raise AssignError("; ".join(problems))
    out = []
    cells = nb.cells
    for i, cell in enumerate(cells):
        meta = cell.get("metadata", {}).get("nbgrader") or {}
        if not meta.get("solution"):
            continue
        m = _GRADE_ID.match(meta["grade_id"])
        check = cells[i + 1].metadata["nbgrader"]
        if check["grade_id"] != f"ch{m.group(1)}-ex{m.group(2)}-check":
            raise AssignError(f"cell {i + 1}: expected grade_id ch{m.group(1)}-ex{m.group(2)}-check")
        out.append(Exercise(m.group(1), int(m.group(2)), i, i + 1, float(check["points"])))
    return out


def find_chapters(notebooks_dir: Path, chapters: Iterable[str] | None) -> list[Path]:
    """The chapter notebooks ``NN_*.ipynb`` that have exercises, optionally only ``chapters``
    (numbers such as ``"03"`` or file stems)."""
    paths = sorted(p for p in Path(notebooks_dir).glob("*.ipynb") if _CHAPTER.match(p.name))
    if chapters is not None:
        wanted = [c.strip() for c in chapters if c.strip()]
        chosen = []
        for w in wanted:
            hits = [p for p in paths if p.stem == w or p.name[:2] == w.zfill(2)]
            if not hits:
                raise AssignError(f"--chapters: no notebook {w!r} in {notebooks_dir}")
            chosen += [p for p in hits if p not in chosen]
        paths = chosen
    return paths


_CONFIG = """\
c = get_config()  # noqa: F821 - nbgrader's configuration file
c.CourseDirectory.root = {root!r}
c.CourseDirectory.assignment_id = {assignment!r}
c.Exchange.root = {exchange!r}
# Chapters run in their smoke profile when graded unless MVBOOK_PROFILE says otherwise.
c.ExecutePreprocessor.timeout = {timeout}
c.Execute.timeout = {timeout}
c.ClearSolutions.code_stub = {{"python": "# YOUR CODE HERE\\nraise NotImplementedError()"}}
"""


def _course_config(root: Path, assignment: str, timeout: int):
    from traitlets.config import Config

    cfg = Config()
    cfg.CourseDirectory.root = str(root)
    cfg.CourseDirectory.assignment_id = assignment
    cfg.Exchange.root = str(root / "exchange")
    cfg.Execute.timeout = timeout
    return cfg


def _api(root: Path, assignment: str, timeout: int):
    try:
        from nbgrader.apps import NbGraderAPI
        from nbgrader.coursedir import CourseDirectory
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise AssignError(
            "nbgrader is not installed: pip install -e '.[test]' (or pip install nbgrader)"
        ) from err
    # nbgrader runs the `alembic` script of its environment: find it without an activated venv
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    cfg = _course_config(root, assignment, timeout)
    coursedir = CourseDirectory(config=cfg)
    return NbGraderAPI(coursedir=coursedir, config=cfg)


def generate(
    chapters: Iterable[Path],
    out: Path,
    *,
    assignment: str = DEFAULT_ASSIGNMENT,
    timeout: int = 600,
) -> list[Path]:
    """Lay out an nbgrader course in ``out`` and generate the student versions.

    Copies the chapters into ``out/source/<assignment>/`` (refusing to overwrite a different
    file there), writes ``out/nbgrader_config.py``, runs nbgrader's ``generate_assignment``
    (which also records the assignment in ``out/gradebook.db``) and returns the student
    notebooks in ``out/release/<assignment>/``.
    """
    out = Path(out).resolve()
    chapters = [Path(p) for p in chapters]
    if not chapters:
        raise AssignError("no chapters to assign")
    for path in chapters:
        exercises(path)  # validates the metadata first, naming the cell
    source = out / "source" / assignment
    source.mkdir(parents=True, exist_ok=True)
    (out / "exchange").mkdir(exist_ok=True)
    for path in chapters:
        target = source / path.name
        if target.exists() and target.read_bytes() != path.read_bytes():
            raise AssignError(f"{target} exists and differs from {path}: choose another --out")
        shutil.copyfile(path, target)
    config = out / "nbgrader_config.py"
    if not config.exists():
        config.write_text(
            _CONFIG.format(root=str(out), assignment=assignment,
                           exchange=str(out / "exchange"), timeout=timeout),
            encoding="utf-8",
        )
    api = _api(out, assignment, timeout)
    result = api.generate_assignment(assignment, force=True)
    if not result.get("success"):
        raise AssignError(f"nbgrader generate_assignment failed: {_last_line(result)}")
    release = out / "release" / assignment
    return sorted(release / p.name for p in chapters)


def _last_line(result: Mapping[str, Any]) -> str:
    text = (result.get("error") or result.get("log") or "").strip()
    return text.splitlines()[-1] if text else "no message"


def autograde(out: Path, *, assignment: str = DEFAULT_ASSIGNMENT, timeout: int = 600) -> dict:
    """Grade every ``out/submitted/<student>/<assignment>/`` with nbgrader's ``autograde``.

    Each submission must hold the release notebooks (edited by the student). Returns
    ``{student: {grade_id: points}}`` read from the gradebook (check cells only).
    """
    out = Path(out).resolve()
    submitted = out / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if \
        submitted.is_dir() else []
    if not students:
        raise AssignError(f"no submissions in {submitted}/<student>/{assignment}/")
    api = _api(out, assignment, timeout)
    from nbgrader.api import Gradebook

    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        for student in students:
            try:
                gb.find_student(student)
            except Exception:  # noqa: BLE001 - nbgrader raises MissingEntry
                gb.add_student(student)
    scores: dict[str, dict[str, float]] = {}
    for student in students:
        result = api.autograde(assignment, student, force=True, create=True)
        if not result.get("success"):
            raise AssignError(f"nbgrader autograde failed for {student}: {_last_line(result)}")
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gb:
        for student in students:
            sub = gb.find_submission(assignment, student)
            per = {}
            for nb in sub.notebooks:
                for grade in nb.grades:
                    if grade.cell.name.endswith("-check"):
                        per[grade.cell.name] = float(grade.score)
            scores[student] = per
    return scores


# --------------------------------------------------------------------------------------------
# Command line


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``assign`` subcommand to the ``mvbook`` command line."""
    parser = subparsers.add_parser(
        "assign",
        help="student versions of chapters (nbgrader), and grading of submissions",
        description="Make an nbgrader course from the book's chapters: student notebooks without "
        "solutions or hidden tests (nbgrader generate_assignment), and grading of submissions "
        "(nbgrader autograde).",
        epilog="Course layout (nbgrader's): DIR/source/ASSIGNMENT/ (the chapters), "
        "DIR/release/ASSIGNMENT/ (hand these out), DIR/submitted/STUDENT/ASSIGNMENT/ (put "
        "submissions here), DIR/autograded/, DIR/gradebook.db. Chapters are executed in "
        "their smoke profile when graded unless MVBOOK_PROFILE is set.",
    )
    parser.add_argument("--chapters", metavar="LIST",
                        help="comma-separated chapter numbers or file stems (default: all with exercises)")
    parser.add_argument("--out", type=Path, default=Path("course"), metavar="DIR",
                        help="course folder (default: course/)")
    parser.add_argument("--assignment", default=DEFAULT_ASSIGNMENT, help="assignment name (default mvbook)")
    parser.add_argument("--notebooks", type=Path, default=None, metavar="DIR",
                        help="folder of the chapters (default: notebooks/)")
    parser.add_argument("--grade", type=Path, metavar="DIR", default=None,
                        help="grade the submissions of the course in DIR instead")
    parser.add_argument("--timeout", type=int, default=600, help="per-cell timeout when grading (s)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Entry point of ``mvbook assign``: 0 done; an :class:`AssignError` is reported by the
    command line's handler (:func:`mvbook.cli.handle_errors`: one line, exit 2)."""
    os.environ.setdefault("MVBOOK_PROFILE", "smoke")
    if args.grade is not None:
        scores = autograde(args.grade, assignment=args.assignment, timeout=args.timeout)
        print(json.dumps(scores, indent=1, sort_keys=True))
        return 0
    from mvbook.report.options import default_root

    notebooks = args.notebooks or default_root() / "notebooks"
    chosen = args.chapters.split(",") if args.chapters else None
    paths = [p for p in find_chapters(notebooks, chosen) if exercises(p)]
    if not paths:
        raise AssignError(f"no chapter with exercises in {notebooks}")
    released = generate(paths, args.out, assignment=args.assignment, timeout=args.timeout)
    for p in released:
        print(p)
    return 0


__all__ = [
    "AssignError",
    "Exercise",
    "autograde",
    "check_metadata",
    "exercises",
    "find_chapters",
    "generate",
]
