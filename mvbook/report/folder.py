"""A report run's folder: its name, its JSON files and the record of its chapters.

A run folder is ``reports/<UTC time>-<profile>/`` by default (:func:`new_run_dir`, never an
existing name) or an explicit ``--out`` that is new or empty (:func:`claim_out_dir`). Its
``environment.json`` (:data:`ENVIRONMENT_FILE`) holds the run's settings and captured
environment plus ``seeds`` and ``notebooks``, one :class:`~mvbook.report.chapter.NotebookRun`
per chapter (:func:`environment_document`); it is rewritten after every chapter
(:func:`write_environment`), which is what lets :func:`load_run` re-enter an interrupted run.
``results.json`` (:data:`RESULTS_FILE`) holds every result of the run, in book order.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mvbook.report.chapter import NotebookRun
from mvbook.report.options import ReportError

ENVIRONMENT_FILE = "environment.json"
RESULTS_FILE = "results.json"


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON, atomically (a temporary file renamed into place)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """The JSON document in ``path``."""
    return json.loads(path.read_text(encoding="utf-8"))


def utc_now() -> str:
    """The current UTC time in ISO format to the second: ``2026-11-23T14:25:01+00:00``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def utc_stamp(now: _dt.datetime | None = None) -> str:
    """``20261123T142501Z``."""
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ")


def new_run_dir(reports_dir: Path, profile: str, suffix: str = "") -> Path:
    """Create ``reports_dir/<UTC>-<profile><suffix>``; never reuses an existing folder."""
    reports_dir.mkdir(parents=True, exist_ok=True)
    base = f"{utc_stamp()}-{profile}{suffix}"
    for i in range(1, 1000):
        candidate = reports_dir / (base if i == 1 else f"{base}-{i}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise ReportError(f"could not find a free run folder name under {reports_dir}")


def claim_out_dir(out: Path) -> Path:
    """Create ``out`` for a run. ``out`` must be new or an empty folder, under an existing
    parent that is a folder; anything else raises :class:`ReportError` naming the path
    (a file-system failure while creating it is the ``OSError``, which names it too)."""
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ReportError(f"--out {out}: {parent} is a file, not a folder")
            break
    if out.exists() and not out.is_dir():
        raise ReportError(f"--out {out} is an existing file, not a folder")
    if out.exists() and any(out.iterdir()):
        raise ReportError(
            f"{out} already exists: a report never overwrites an earlier run "
            f"(choose another --out, or --resume {out} to finish that run)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


def environment_document(env: dict[str, Any], runs: Sequence[NotebookRun]) -> dict[str, Any]:
    """``environment.json``: ``env`` plus ``seeds`` (the distinct ``seed`` parameters of the
    chapters) and ``notebooks`` (each chapter's record)."""
    doc = dict(env)
    doc["seeds"] = sorted(
        {r.parameters.get("seed") for r in runs if r.parameters.get("seed") is not None}, key=str
    )
    doc["notebooks"] = [r.to_json() for r in runs]
    return doc


def write_environment(run_dir: Path, env: dict[str, Any], runs: Sequence[NotebookRun]) -> None:
    """(Re)write ``run_dir/environment.json`` from ``env`` and the chapters' records."""
    write_json(run_dir / ENVIRONMENT_FILE, environment_document(env, runs))


def _read_record(path: Path, key: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``key`` is a list of objects; :class:`ReportError`
    naming the file when it cannot be read, is not JSON or is not such a record."""
    try:
        doc = read_json(path)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ReportError(f"{path} is damaged ({err}); start a new run") from err
    if not isinstance(doc, dict) or not isinstance(doc.get(key, []), list) or not all(
        isinstance(r, dict) for r in doc.get(key, [])
    ):
        raise ReportError(f"{path} is damaged (not the record of a report run); start a new run")
    return doc


def load_run(
    run_dir: Path, results: bool = False
) -> tuple[dict[str, Any], list[NotebookRun]]:
    """Read a run's ``environment.json``: its settings (without ``seeds`` and ``notebooks``)
    and its chapters.

    Raises :class:`ReportError` naming the file when ``run_dir`` is not a folder, has no
    ``environment.json``, or it is not JSON or not a run's record (a chapter without a name or
    parameters); with ``results``, also when ``results.json`` is missing (the run did not
    finish) or damaged, so a run to verify is refused before anything runs.
    """
    if not run_dir.is_dir():
        raise ReportError(f"{run_dir} is not a report run folder")
    path = run_dir / ENVIRONMENT_FILE
    if not path.exists():
        raise ReportError(f"{run_dir} is not a report run (no {ENVIRONMENT_FILE})")
    env = _read_record(path, "notebooks")
    records = env.pop("notebooks", [])
    if not all(isinstance(r.get("name"), str) and isinstance(r.get("parameters", {}), dict)
               for r in records):
        raise ReportError(f"{path} is damaged (a chapter without name or parameters); "
                          "start a new run")
    if results:
        if not (run_dir / RESULTS_FILE).exists():
            raise ReportError(f"{run_dir} has no {RESULTS_FILE}: it did not finish; "
                              "resume it first")
        _read_record(run_dir / RESULTS_FILE, "results")
    env.pop("seeds", None)
    return env, [NotebookRun.from_json(r) for r in records]


__all__ = [
    "ENVIRONMENT_FILE",
    "RESULTS_FILE",
    "claim_out_dir",
    "environment_document",
    "load_run",
    "new_run_dir",
    "read_json",
    "utc_now",
    "utc_stamp",
    "write_environment",
    "write_json",
]
