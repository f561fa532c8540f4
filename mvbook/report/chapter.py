"""One chapter of a report run: its record, its execution with papermill, its results.

:class:`NotebookRun` is what a run remembers of a chapter (parameters, status, wall time,
the failing cell); the list of them is stored in the run's ``environment.json``
(:mod:`mvbook.report.folder`). :func:`execute_notebook` runs one chapter with papermill into
the run folder, in the notebook's own folder (as Jupyter and nbval do), with the environment
variables ``MVBOOK_PROFILE`` (the profile), ``MVBOOK_CHAPTER`` (the file stem),
``MVBOOK_RESULTS`` (the chapter's JSON-lines file ``results/<stem>.jsonl``, which
:func:`mvbook.results.record` appends to), ``PYTHONHASHSEED=0`` and
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic GPU matrix products), and locates the
failing cell when it fails; :func:`collect_notebook_results` reads back what the chapter
recorded and :func:`annotate_notebook` stores status, parameters and results in the executed
notebook. The run itself (order, resume, verify) is :mod:`mvbook.report.runner`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mvbook.results import (
    CHAPTER_ENV,
    PROFILE_ENV,
    RESULTS_ENV,
    Result,
    load_results_jsonl,
    results_from_notebook,
)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class NotebookRun:
    """State of one chapter in a run (one entry of ``environment.json["notebooks"]``)."""

    name: str
    source: str
    parameters: dict[str, Any]
    status: str = "pending"  # pending | running | ok | failed
    wall_s: float | None = None
    started_utc: str | None = None
    error: dict[str, Any] | None = None
    results: int = 0
    executed: str | None = None
    html: str | None = None
    html_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Every field, as stored in ``environment.json``."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotebookRun:
        """The record :meth:`to_json` wrote (unknown keys ignored, missing ones defaulted)."""
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    def describe_error(self) -> str:
        """``"cell 4 (In [7]): ValueError: message"``; ``""`` when the chapter has no error."""
        if not self.error:
            return ""
        err = self.error
        where = f"cell {err['cell']}" if err.get("cell") is not None else "before any cell"
        if err.get("execution_count") is not None:
            where += f" (In [{err['execution_count']}])"
        return f"{where}: {err.get('ename')}: {err.get('evalue')}"


def _clean(text: str) -> str:
    return _ANSI.sub("", text)


def _error_from_notebook(nb: Any, exc: BaseException) -> dict[str, Any]:
    """Locate the failing cell of an executed notebook. ``cell`` is the 1-based index of
    the cell in the source notebook (papermill's injected parameters cell not counted)."""
    failing = None
    index = None
    for i, cell in enumerate(nb.cells):
        pm = cell.get("metadata", {}).get("papermill", {})
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        if errors or pm.get("status") == "failed" or pm.get("exception"):
            failing, index = cell, i
            break
    if failing is None:  # timeout / dead kernel: the last cell that started
        for i, cell in enumerate(nb.cells):
            if cell.get("metadata", {}).get("papermill", {}).get("start_time"):
                failing, index = cell, i
    ename = type(exc).__name__
    evalue = _clean(str(exc)).strip()
    traceback: list[str] = []
    if failing is not None:
        for out in failing.get("outputs", []):
            if out.get("output_type") == "error":
                ename, evalue = out.get("ename", ename), out.get("evalue", evalue)
                traceback = [_clean(t) for t in out.get("traceback", [])]
                break
    if ename == "PapermillExecutionError" and hasattr(exc, "ename"):
        ename, evalue = exc.ename, exc.evalue  # type: ignore[attr-defined]
    if isinstance(exc, TimeoutError):  # nbclient's CellTimeoutError (the kernel was interrupted)
        ename, evalue = "CellTimeoutError", _clean(str(exc)).strip()
    error: dict[str, Any] = {
        "cell": None,
        "execution_count": None,
        "source": None,
        "ename": ename,
        "evalue": evalue.splitlines()[0][:500] if evalue else "",
        "traceback": "\n".join(traceback)[-4000:],
    }
    if failing is not None and index is not None:
        added = {"injected-parameters", "papermill-error-cell-tag"}
        injected = sum(
            bool(added & set(c.get("metadata", {}).get("tags", []))) for c in nb.cells[:index]
        )
        error["cell"] = index + 1 - injected
        error["execution_count"] = failing.get("execution_count")
        error["source"] = failing.get("source", "")[:2000]
    return error


def execute_notebook(
    source: Path,
    run_dir: Path,
    parameters: Mapping[str, Any],
    *,
    profile: str,
    cell_timeout: float | None,
    kernel: str = "python3",
    progress_bar: bool = False,
) -> tuple[str, dict[str, Any] | None]:
    """Execute ``source`` into ``run_dir/<stem>.ipynb``; return ``(status, error)``.

    ``status`` is ``"ok"`` or ``"failed"``; ``error`` describes the failing cell
    (``cell``, ``execution_count``, ``source``, ``ename``, ``evalue``, ``traceback``).
    """
    import nbformat
    import papermill

    stem = source.stem
    output = run_dir / f"{stem}.ipynb"
    results_dir = run_dir / "results"
    results_dir.mkdir(exist_ok=True)
    results_file = results_dir / f"{stem}.jsonl"
    if results_file.exists():
        results_file.unlink()
    env = {
        RESULTS_ENV: str(results_file.resolve()),
        CHAPTER_ENV: stem,
        PROFILE_ENV: profile,
        "PYTHONHASHSEED": "0",
        # deterministic cuBLAS (torch.use_deterministic_algorithms asks for it on GPUs)
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ":4096:8"),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    status, error = "ok", None
    try:
        papermill.execute_notebook(
            str(source),
            str(output),
            parameters=dict(parameters),
            kernel_name=kernel,
            language="python",
            progress_bar=progress_bar,
            log_output=False,
            cwd=str(source.parent.resolve()),
            execution_timeout=int(math.ceil(cell_timeout)) if cell_timeout else None,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported per notebook
        status = "failed"
        try:
            nb = nbformat.read(str(output), as_version=4)
        except Exception:  # noqa: BLE001 - nothing was written
            nb = nbformat.v4.new_notebook()
        error = _error_from_notebook(nb, exc)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return status, error


def collect_notebook_results(run_dir: Path, stem: str) -> list[Result]:
    """Results of one chapter: its JSON-lines file, else the metadata of its outputs."""
    results = load_results_jsonl(run_dir / "results" / f"{stem}.jsonl", chapter=stem)
    executed = run_dir / f"{stem}.ipynb"
    if not results and executed.exists():
        try:
            results = results_from_notebook(executed, chapter=stem)
        except Exception:  # noqa: BLE001 - an unreadable notebook has no results
            results = []
    return results


def annotate_notebook(path: Path, run: NotebookRun, results: Sequence[Mapping[str, Any]]) -> None:
    """Store status, parameters and results under the executed notebook's metadata
    key ``"mvbook"``."""
    import nbformat

    if not path.exists():
        return
    nb = nbformat.read(str(path), as_version=4)
    nb.metadata["mvbook"] = {
        "status": run.status,
        "parameters": run.parameters,
        "wall_s": run.wall_s,
        "error": run.error,
        "results": [dict(r) for r in results],
    }
    nbformat.write(nb, str(path))


__all__ = [
    "NotebookRun",
    "annotate_notebook",
    "collect_notebook_results",
    "execute_notebook",
]
