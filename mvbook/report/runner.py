"""A report run: start it, execute its chapters in book order, finish it; resume it.

:func:`run_report` selects the chapters (:func:`~mvbook.report.options.find_notebooks`),
gives each its parameters (:func:`~mvbook.report.options.notebook_parameters`), claims a new
run folder (:mod:`mvbook.report.folder`) and hands them to :func:`execute_runs`, the chapter
loop: each chapter not yet ``ok`` is executed (:func:`~mvbook.report.chapter.execute_notebook`),
annotated with its results and exported to HTML (:func:`~mvbook.report.pages.export_html`);
a failing chapter is reported with its cell and error and the others still run.
``environment.json`` is rewritten before and after every chapter, and at the end
``results.json``, the summaries and ``index.html`` are written. :func:`resume_report`
re-enters a run and executes only the chapters that did not succeed there; verification is
:mod:`mvbook.report.verify`.
"""

from __future__ import annotations

import contextlib
import fcntl
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from mvbook.report.chapter import (
    NotebookRun,
    annotate_notebook,
    collect_notebook_results,
    execute_notebook,
)
from mvbook.report.environment import capture_environment
from mvbook.report.folder import (
    ENVIRONMENT_FILE,
    RESULTS_FILE,
    claim_out_dir,
    environment_document,
    load_run,
    new_run_dir,
    utc_now,
    write_environment,
    write_json,
)
from mvbook.report.options import (
    ReportError,
    ReportOptions,
    check_overrides,
    declared_parameters,
    find_notebooks,
    load_config,
    notebook_parameters,
)
from mvbook.report.pages import export_html, format_seconds, write_pages
from mvbook.results import Result
from mvbook.runtime import check_profile

LOCK_FILE = ".mvbook-report.lock"


class ReportInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``run_dir`` is the folder to ``--resume``."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on a run folder: a second ``mvbook report`` on the same folder
    (two ``--resume`` at once) is refused instead of running chapters twice."""
    path = run_dir / LOCK_FILE
    try:
        f = open(path, "a")  # noqa: SIM115 - held for the duration of the run
    except OSError as err:
        raise ReportError(f"cannot write in the run folder {run_dir}: {err.strerror}") from err
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReportError(f"another mvbook report is running in {run_dir} (it holds {path}); "
                              "wait for it to finish") from None
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                path.unlink()
            fcntl.flock(f, fcntl.LOCK_UN)
    finally:
        f.close()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def log(stream: TextIO | None, message: str) -> None:
    """Print one line of the run's log to ``stream`` (standard output by default), flushed."""
    print(message, file=stream or sys.stdout, flush=True)


def run_command() -> list[str]:
    """The command line of this process, as recorded in ``environment.json``: ``["mvbook",
    "report", ...]``, or ``["python", "-m", "mvbook", "report", ...]`` for ``python -m``."""
    name = Path(sys.argv[0]).name
    prefix = ["python", "-m", "mvbook"] if name == "__main__.py" else [name]
    return [*prefix, *sys.argv[1:]]


def _finish(run_dir: Path, env: dict[str, Any], runs: list[NotebookRun]) -> list[Result]:
    """Collect every chapter's results; write ``environment.json``, ``results.json`` and the
    pages. Returns the results in book order."""
    results: list[Result] = []
    for run in runs:
        if run.status in ("ok", "failed"):
            found = collect_notebook_results(run_dir, run.name)
            run.results = len(found)
            results.extend(found)
    env["finished_utc"] = utc_now()
    doc = environment_document(env, runs)
    write_json(run_dir / ENVIRONMENT_FILE, doc)
    write_json(
        run_dir / RESULTS_FILE,
        {
            "run": env.get("run"),
            "profile": env.get("profile"),
            "results": [r.to_json() for r in results],
        },
    )
    write_pages(run_dir, doc, runs, results)
    return results


def _missing_source(run: NotebookRun, source: Path) -> None:
    """Record ``run`` as failed because its notebook ``source`` does not exist."""
    run.status = "failed"
    run.error = {
        "cell": None,
        "execution_count": None,
        "source": None,
        "ename": "FileNotFoundError",
        "evalue": f"{source} does not exist",
        "traceback": "",
    }


def _run_chapter(
    run: NotebookRun,
    source: Path,
    run_dir: Path,
    env: Mapping[str, Any],
    opts: ReportOptions,
    label: str,
    stream: TextIO | None,
) -> None:
    """Execute the chapter ``source`` into ``run_dir`` and update ``run`` (status, error, wall
    time, results, executed notebook, HTML); log the outcome."""
    log(
        stream,
        f"{label}: running (profile {opts.profile}, "
        f"timeout {format_seconds(env.get('cell_timeout')) or 'none'} per cell)",
    )
    start = time.perf_counter()
    run.status, run.error = execute_notebook(
        source,
        run_dir,
        run.parameters,
        profile=opts.profile,
        cell_timeout=env.get("cell_timeout"),
        kernel=opts.kernel,
        progress_bar=opts.show_progress(),
    )
    run.wall_s = round(time.perf_counter() - start, 3)
    executed = run_dir / f"{run.name}.ipynb"
    run.executed = executed.name if executed.exists() else None
    found = collect_notebook_results(run_dir, run.name)
    run.results = len(found)
    if run.executed:
        try:
            annotate_notebook(executed, run, [r.to_json() for r in found])
        except Exception as exc:  # noqa: BLE001 - the run itself is what matters
            log(stream, f"{label}: could not annotate {executed.name}: {exc}")
    if run.executed and opts.html:
        try:
            export_html(executed, run_dir / f"{run.name}.html")
            run.html, run.html_error = f"{run.name}.html", None
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            run.html, run.html_error = None, f"{type(exc).__name__}: {exc}"
            log(stream, f"{label}: HTML export failed: {run.html_error}")
    wall = format_seconds(run.wall_s)
    if run.status == "ok":
        log(stream, f"{label}: ok in {wall} ({_plural(run.results, 'result')})")
        return
    log(stream, f"{label}: FAILED after {wall}: {run.describe_error()}")
    src = (run.error or {}).get("source") or ""
    for line in src.strip().splitlines()[:8]:
        log(stream, f"    | {line}")
    tb = (run.error or {}).get("traceback") or ""
    for line in [t for t in tb.strip().splitlines() if t.strip()][-6:]:
        log(stream, f"    {line}")


def execute_runs(
    run_dir: Path,
    env: dict[str, Any],
    runs: list[NotebookRun],
    opts: ReportOptions,
    stream: TextIO | None = None,
) -> int:
    """Execute every run not yet ``ok`` (from ``opts.notebooks_dir``, with ``env``'s cell
    timeout); write environment, results, summaries and index.

    ``runs`` are updated in place. Returns the number of chapters that failed.
    """
    try:
        with run_lock(run_dir):
            return _execute_runs(run_dir, env, runs, opts, stream)
    except KeyboardInterrupt as err:
        if isinstance(err, ReportInterrupted):
            raise
        raise ReportInterrupted(run_dir) from err


def _execute_runs(
    run_dir: Path,
    env: dict[str, Any],
    runs: list[NotebookRun],
    opts: ReportOptions,
    stream: TextIO | None = None,
) -> int:
    n = len(runs)
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{n}] {run.name}"
        if run.status == "ok":
            log(stream, f"{label}: already ok in this run, skipped")
            continue
        source = opts.notebooks_dir / f"{run.name}.ipynb"
        if source.exists():
            run.status, run.error, run.started_utc = "running", None, utc_now()
            write_environment(run_dir, env, runs)
            _run_chapter(run, source, run_dir, env, opts, label, stream)
        else:
            _missing_source(run, source)
            log(stream, f"{label}: FAILED: {source} does not exist")
        write_environment(run_dir, env, runs)
    results = _finish(run_dir, env, runs)
    failed = [r for r in runs if r.status != "ok"]
    log(
        stream,
        f"{n - len(failed)} of {n} notebooks ok, {_plural(len(results), 'result')} -> {run_dir}",
    )
    for run in failed:
        log(stream, f"  FAILED {run.name}: {run.describe_error()}")
    log(stream, f"summary: {run_dir / 'summary.md'}   index: {run_dir / 'index.html'}")
    return len(failed)


def _base_env(
    opts: ReportOptions, run_dir: Path, config: Mapping[str, Any], cell_timeout: float | None
) -> dict[str, Any]:
    """The settings of a new run and the environment it runs in (``environment.json``
    without the chapters)."""
    env: dict[str, Any] = {
        "run": run_dir.name,
        "profile": opts.profile,
        "started_utc": utc_now(),
        "finished_utc": None,
        "command": run_command(),
        "notebooks_dir": str(opts.notebooks_dir.resolve()),
        "config": config.get("path"),
        "cell_timeout": cell_timeout,
        "kernel": opts.kernel,
        "overrides": dict(opts.overrides),
        "only": opts.only,
    }
    env.update(capture_environment(opts.notebooks_dir.resolve()))
    return env


def run_report(opts: ReportOptions, stream: TextIO | None = None) -> tuple[Path, int]:
    """Run the chapters into a new run folder; return ``(run folder, number failed)``.

    Raises :class:`~mvbook.report.options.ReportError` (before any chapter runs) for an
    unknown chapter selection, a malformed config or an ``--out`` folder that is not empty.
    """
    check_profile(opts.profile)
    notebooks = find_notebooks(opts.notebooks_dir, opts.only)
    if not notebooks:
        raise ReportError(f"no notebooks NN_*.ipynb in {opts.notebooks_dir}")
    config = load_config(opts.profile, opts.configs_dir)
    check_overrides(opts.overrides, {p.stem: declared_parameters(p) for p in notebooks},
                    opts.profile)
    runs = [
        NotebookRun(
            name=p.stem,
            source=str(p),
            parameters=notebook_parameters(p, opts.profile, config, opts.overrides),
        )
        for p in notebooks
    ]
    run_dir = claim_out_dir(opts.out) if opts.out else new_run_dir(opts.reports_dir, opts.profile)
    log(stream, f"mvbook report: profile {opts.profile}, {len(runs)} notebooks -> {run_dir}")
    env = _base_env(opts, run_dir, config, opts.resolved_cell_timeout(config))
    write_environment(run_dir, env, runs)
    failed = execute_runs(run_dir, env, runs, opts, stream)
    return run_dir, failed


def resume_report(
    run_dir: Path, opts: ReportOptions, stream: TextIO | None = None
) -> tuple[Path, int]:
    """Re-enter ``run_dir`` and execute the chapters that did not succeed there.

    The run keeps its profile, notebooks folder, kernel, cell timeout and each chapter's
    parameters; ``-p`` overrides given now apply to the chapters executed now. A chapter
    recorded ``ok`` whose executed notebook is gone runs again. Returns
    ``(run_dir, number failed)``.
    """
    env, runs = load_run(run_dir)
    opts = opts.for_run(env)
    declared = {r.name: declared_parameters(opts.notebooks_dir / f"{r.name}.ipynb")
                for r in runs if r.status != "ok"}
    check_overrides(opts.overrides, declared, opts.profile)
    for run in runs:
        if run.status == "ok" and not (run_dir / f"{run.name}.ipynb").exists():
            run.status = "pending"
        if run.status != "ok" and opts.overrides:
            names = declared.get(run.name)
            run.parameters.update({k: v for k, v in opts.overrides.items()
                                   if names is None or k in names})
            run.parameters["profile"] = opts.profile
    env.setdefault("resumed_utc", []).append(utc_now())
    todo = sum(r.status != "ok" for r in runs)
    log(
        stream,
        f"mvbook report: resuming {run_dir} (profile {opts.profile}): "
        f"{len(runs) - todo} ok, {todo} to run",
    )
    failed = execute_runs(run_dir, env, runs, opts, stream)
    return run_dir, failed


__all__ = [
    "LOCK_FILE",
    "ReportInterrupted",
    "execute_runs",
    "log",
    "resume_report",
    "run_command",
    "run_lock",
    "run_report",
]
