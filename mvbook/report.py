"""Run the book: execute the chapters with papermill, collect their results, export HTML.

A *report run* is one folder, ``reports/<UTC time>-<profile>/`` by default, holding:

- ``NN_name.ipynb``: each chapter executed with its parameters (outputs included; the
  notebook metadata key ``"mvbook"`` holds its status, parameters and results);
- ``NN_name.html``: the same exported with nbconvert; it renders without network (plotly.js
  is embedded once per chapter by :func:`mvbook.notebook.setup_notebook`, and no require.js
  or widget-manager script is loaded from a CDN);
- ``results/NN_name.jsonl``: what the chapter passed to :func:`mvbook.results.record`;
- ``results.json``: all results, in book order;
- ``summary.md`` and ``summary.html``: the results table (chapter, metric, ours, paper,
  unit, data, split, note) and the status and wall time of each chapter;
- ``index.html``: links to the chapters, the summary table and the environment;
- ``environment.json``: git commit and dirty flag, Python and package versions, CPU and GPU,
  profile, seeds, the exact parameters of each chapter, and each chapter's status, wall
  time and error. It is rewritten after every chapter, so an interrupted run can be resumed.

Parameters come from ``configs/<profile>.yaml``::

    cell_timeout: 1800        # seconds per cell; null = no limit
    parameters:               # every chapter
      seed: 0
      device: auto
      data: studio
    notebooks:                # per chapter, by number ("10") or file stem
      "10":
        seed: 1

then ``-p key=value`` overrides (values parsed as YAML), and ``profile`` is always passed.
The kernel runs with the environment variables ``MVBOOK_PROFILE`` (the profile),
``MVBOOK_CHAPTER`` (the file stem), ``MVBOOK_RESULTS`` (the chapter's JSON-lines file),
``PYTHONHASHSEED=0`` and ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (deterministic GPU matrix
products), in the notebook's own folder (as Jupyter and nbval do).

Runs never overwrite an earlier run: a default folder name that exists gets a suffix, an
explicit ``--out`` that exists is refused. ``resume`` re-enters a run and executes only the
chapters that did not succeed; ``verify`` re-executes a run's chapters with the same
parameters into a new folder and compares the two ``results.json`` within a tolerance.

This module is the runner: configuration, run folders, :func:`run_report`,
:func:`resume_report` and :func:`verify_report`. It builds on :mod:`mvbook.report_notebook`
(executing one chapter, its record in ``environment.json``), :mod:`mvbook.report_pages`
(summaries, index, HTML export) and :mod:`mvbook.environment` (git, packages, hardware);
their names stay importable from here.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mvbook.environment import (  # noqa: F401 - also importable from here
    KEY_PACKAGES,
    capture_environment,
    cpu_name,
    git_info,
    gpu_names,
    package_versions,
)
from mvbook.report_notebook import (  # noqa: F401 - also importable from here
    ENVIRONMENT_FILE,
    RESULTS_FILE,
    NotebookRun,
    annotate_notebook,
    collect_notebook_results,
    execute_notebook,
    read_json,
    write_json,
)
from mvbook.report_pages import (  # noqa: F401 - also importable from here
    export_html,
    format_seconds,
    index_html,
    summary_html_table,
    summary_markdown,
    write_pages,
)
from mvbook.results import (  # noqa: F401 - also importable from here
    CHAPTER_ENV,
    PROFILE_ENV,
    RESULTS_ENV,
    TABLE_COLUMNS,
    Result,
    format_html_table,
    format_markdown_table,
    format_value,
    load_results_jsonl,
    results_from_notebook,
)
from mvbook.runtime import PROFILES, check_profile

NOTEBOOK_PATTERN = re.compile(r"^(\d+)_.+\.ipynb$")


class ReportError(Exception):
    """A report cannot start: bad arguments, missing files, a folder that would be overwritten."""


# --------------------------------------------------------------------------------------------
# Locations, notebooks and configuration


def default_root() -> Path:
    """The folder that holds ``notebooks/`` and ``configs/``: the working directory when it
    has a ``notebooks`` folder, else the checkout that contains the ``mvbook`` package."""
    cwd = Path.cwd()
    if (cwd / "notebooks").is_dir():
        return cwd
    return Path(__file__).resolve().parents[1]


def find_notebooks(
    notebooks_dir: str | os.PathLike[str], only: Iterable[str] | None = None
) -> list[Path]:
    """The chapters ``NN_*.ipynb`` of ``notebooks_dir`` in book order (by number, then name).

    ``only`` selects chapters by number (``"1"``, ``"01"``, ``"10"``) or file stem; a selector
    that matches nothing raises :class:`ReportError`.
    """
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise ReportError(f"notebooks folder {folder} does not exist")
    found = []
    for path in folder.iterdir():
        match = NOTEBOOK_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path.name, path))
    found.sort()
    notebooks = [p for _, _, p in found]
    if only is None:
        return notebooks
    wanted = [s.strip() for s in only if s.strip()]
    selected: list[Path] = []
    for sel in wanted:
        hits = [p for p in notebooks if _matches(p, sel)]
        if not hits:
            names = ", ".join(p.stem for p in notebooks) or "none"
            raise ReportError(f"--only {sel!r} matches no notebook in {folder} (have: {names})")
        selected.extend(h for h in hits if h not in selected)
    return [p for p in notebooks if p in selected]


def _matches(path: Path, selector: str) -> bool:
    number = NOTEBOOK_PATTERN.match(path.name).group(1)  # type: ignore[union-attr]
    if selector.isdigit():
        return int(selector) == int(number)
    return selector in (path.stem, path.name)


def load_config(profile: str, configs_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<configs_dir>/<profile>.yaml`` (see the module docstring); a missing file gives
    defaults (no cell timeout, no parameters besides ``profile``)."""
    import yaml

    check_profile(profile)
    path = Path(configs_dir) / f"{profile}.yaml"
    config: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ReportError(f"{path}: expected a mapping at the top level")
        config = loaded
    unknown = set(config) - {"profile", "cell_timeout", "parameters", "notebooks", "description"}
    if unknown:
        raise ReportError(f"{path}: unknown keys {sorted(unknown)}")
    if config.get("profile", profile) != profile:
        raise ReportError(f"{path}: says profile {config['profile']!r}, expected {profile!r}")
    timeout = config.get("cell_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ReportError(
            f"{path}: cell_timeout must be a positive number or null, got {timeout!r}"
        )
    for key in ("parameters", "notebooks"):
        value = config.get(key) or {}
        if not isinstance(value, dict):
            raise ReportError(f"{path}: {key} must be a mapping")
        config[key] = value
    for name, params in config["notebooks"].items():
        if not isinstance(params, dict):
            raise ReportError(f"{path}: notebooks.{name} must be a mapping of parameters")
    config["path"] = str(path) if path.exists() else None
    return config


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["seed=1", "device=cpu"]`` -> ``{"seed": 1, "device": "cpu"}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ReportError(f"-p expects key=value with a Python identifier as key, got {item!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str) and parsed.strip():
            try:  # YAML 1.1 reads 1e-3 as a string
                parsed = float(parsed)
            except ValueError:
                pass
        out[key] = parsed
    return out


def notebook_parameters(
    path: Path, profile: str, config: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Parameters of one chapter: global, then per-notebook (by number or stem), then ``-p``;
    ``profile`` always set.

    Configuration parameters that the chapter's ``parameters`` cell does not declare are left
    out (``data`` means nothing to a chapter without data); ``-p`` overrides are always passed,
    so a mistyped name is still reported by papermill."""
    params: dict[str, Any] = dict(config.get("parameters") or {})
    number = NOTEBOOK_PATTERN.match(path.name).group(1)  # type: ignore[union-attr]
    per_nb = config.get("notebooks") or {}
    for key, values in per_nb.items():
        key = str(key)
        if (key.isdigit() and int(key) == int(number)) or key in (path.stem, path.name):
            params.update(values)
    declared = declared_parameters(path)
    if declared is not None:
        params = {k: v for k, v in params.items() if k in declared}
    params.update(overrides)
    params["profile"] = profile
    return params


def declared_parameters(path: Path) -> set[str] | None:
    """Names assigned in the notebook's cell tagged ``parameters`` (``None`` if unreadable)."""
    import ast

    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        tree = ast.parse(cell.source)
    except Exception:  # a broken notebook is reported when it runs, not here
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


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
    """Create ``out`` for a run; refuses a folder that exists and is not empty."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReportError(
            f"{out} already exists: a report never overwrites an earlier run "
            f"(choose another --out, or --resume {out} to finish that run)"
        )
    out.mkdir(parents=True, exist_ok=True)
    return out


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class ReportOptions:
    """Everything a run needs; built by :mod:`mvbook.report_cli` from the command line."""

    profile: str = "quick"
    notebooks_dir: Path = field(default_factory=lambda: default_root() / "notebooks")
    configs_dir: Path = field(default_factory=lambda: default_root() / "configs")
    reports_dir: Path = field(default_factory=lambda: default_root() / "reports")
    only: list[str] | None = None
    out: Path | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    cell_timeout: float | None = None  # None: from the config; 0: no limit
    kernel: str = "python3"
    html: bool = True
    progress_bar: bool | None = None  # None: papermill's bar when stderr is a terminal


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _log(stream: TextIO | None, message: str) -> None:
    print(message, file=stream or sys.stdout, flush=True)


def _env_document(env: dict[str, Any], runs: Sequence[NotebookRun]) -> dict[str, Any]:
    doc = dict(env)
    doc["seeds"] = sorted(
        {r.parameters.get("seed") for r in runs if r.parameters.get("seed") is not None}, key=str
    )
    doc["notebooks"] = [r.to_json() for r in runs]
    return doc


def _finish(run_dir: Path, env: dict[str, Any], runs: Sequence[NotebookRun]) -> list[Result]:
    results: list[Result] = []
    for run in runs:
        if run.status in ("ok", "failed"):
            found = collect_notebook_results(run_dir, run.name)
            run.results = len(found)
            results.extend(found)
    env["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    doc = _env_document(env, runs)
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


def execute_runs(
    run_dir: Path,
    env: dict[str, Any],
    runs: list[NotebookRun],
    notebooks_dir: Path,
    opts: ReportOptions,
    stream: TextIO | None = None,
) -> int:
    """Execute every run not yet ``ok``; write environment, results, summaries and index.

    Returns the number of chapters that failed.
    """
    todo = [r for r in runs if r.status != "ok"]
    progress = opts.progress_bar if opts.progress_bar is not None else sys.stderr.isatty()
    n = len(runs)
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{n}] {run.name}"
        if run not in todo:
            _log(stream, f"{label}: already ok in this run, skipped")
            continue
        source = notebooks_dir / f"{run.name}.ipynb"
        if not source.exists():
            run.status = "failed"
            run.error = {
                "cell": None,
                "execution_count": None,
                "source": None,
                "ename": "FileNotFoundError",
                "evalue": f"{source} does not exist",
                "traceback": "",
            }
            _log(stream, f"{label}: FAILED: {source} does not exist")
            write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
            continue
        _log(
            stream,
            f"{label}: running (profile {opts.profile}, "
            f"timeout {format_seconds(env.get('cell_timeout')) or 'none'} per cell)",
        )
        run.status = "running"
        run.error = None
        run.started_utc = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
        start = time.perf_counter()
        run.status, run.error = execute_notebook(
            source,
            run_dir,
            run.parameters,
            profile=opts.profile,
            cell_timeout=env.get("cell_timeout"),
            kernel=opts.kernel,
            progress_bar=progress,
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
                _log(stream, f"{label}: could not annotate {executed.name}: {exc}")
        if run.executed and opts.html:
            try:
                export_html(executed, run_dir / f"{run.name}.html")
                run.html, run.html_error = f"{run.name}.html", None
            except Exception as exc:  # noqa: BLE001 - reported, the run goes on
                run.html, run.html_error = None, f"{type(exc).__name__}: {exc}"
                _log(stream, f"{label}: HTML export failed: {run.html_error}")
        if run.status == "ok":
            _log(
                stream,
                f"{label}: ok in {format_seconds(run.wall_s)} ({_plural(run.results, 'result')})",
            )
        else:
            _log(
                stream,
                f"{label}: FAILED after {format_seconds(run.wall_s)}: {run.describe_error()}",
            )
            src = (run.error or {}).get("source") or ""
            for line in src.strip().splitlines()[:8]:
                _log(stream, f"    | {line}")
            tb = (run.error or {}).get("traceback") or ""
            tail = [t for t in tb.strip().splitlines() if t.strip()][-6:]
            for line in tail:
                _log(stream, f"    {line}")
        write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
    results = _finish(run_dir, env, runs)
    failed = [r for r in runs if r.status != "ok"]
    _log(
        stream,
        f"{n - len(failed)} of {n} notebooks ok, {_plural(len(results), 'result')} -> {run_dir}",
    )
    for run in failed:
        _log(stream, f"  FAILED {run.name}: {run.describe_error()}")
    _log(stream, f"summary: {run_dir / 'summary.md'}   index: {run_dir / 'index.html'}")
    return len(failed)


def _base_env(
    opts: ReportOptions,
    run_dir: Path,
    notebooks_dir: Path,
    config: Mapping[str, Any],
    cell_timeout: float | None,
) -> dict[str, Any]:
    env: dict[str, Any] = {
        "run": run_dir.name,
        "profile": opts.profile,
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "finished_utc": None,
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "notebooks_dir": str(notebooks_dir.resolve()),
        "config": config.get("path"),
        "cell_timeout": cell_timeout,
        "kernel": opts.kernel,
        "overrides": dict(opts.overrides),
        "only": opts.only,
    }
    env.update(capture_environment(notebooks_dir.resolve()))
    return env


def run_report(opts: ReportOptions, stream: TextIO | None = None) -> tuple[Path, int]:
    """Run the chapters into a new run folder; return ``(run folder, number failed)``."""
    check_profile(opts.profile)
    notebooks = find_notebooks(opts.notebooks_dir, opts.only)
    if not notebooks:
        raise ReportError(f"no notebooks NN_*.ipynb in {opts.notebooks_dir}")
    config = load_config(opts.profile, opts.configs_dir)
    cell_timeout = (
        opts.cell_timeout if opts.cell_timeout is not None else config.get("cell_timeout")
    )
    cell_timeout = cell_timeout or None  # 0: no limit
    runs = [
        NotebookRun(
            name=p.stem,
            source=str(p),
            parameters=notebook_parameters(p, opts.profile, config, opts.overrides),
        )
        for p in notebooks
    ]
    run_dir = claim_out_dir(opts.out) if opts.out else new_run_dir(opts.reports_dir, opts.profile)
    _log(stream, f"mvbook report: profile {opts.profile}, {len(runs)} notebooks -> {run_dir}")
    env = _base_env(opts, run_dir, opts.notebooks_dir, config, cell_timeout)
    write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
    failed = execute_runs(run_dir, env, runs, opts.notebooks_dir, opts, stream)
    return run_dir, failed


def load_run(run_dir: Path) -> tuple[dict[str, Any], list[NotebookRun]]:
    """Read a run's ``environment.json``: its settings and chapters."""
    path = run_dir / ENVIRONMENT_FILE
    if not path.exists():
        raise ReportError(f"{run_dir} is not a report run (no {ENVIRONMENT_FILE})")
    env = read_json(path)
    runs = [NotebookRun.from_json(r) for r in env.pop("notebooks", [])]
    env.pop("seeds", None)
    return env, runs


def resume_report(
    run_dir: Path, opts: ReportOptions, stream: TextIO | None = None
) -> tuple[Path, int]:
    """Re-enter ``run_dir`` and execute the chapters that did not succeed there.

    The run keeps its profile, notebooks folder, cell timeout and each chapter's parameters;
    ``-p`` overrides given now apply to the chapters executed now.
    """
    env, runs = load_run(run_dir)
    opts.profile = env.get("profile", opts.profile)
    opts.kernel = env.get("kernel") or opts.kernel
    notebooks_dir = Path(env.get("notebooks_dir") or opts.notebooks_dir)
    for run in runs:
        if run.status == "ok" and not (run_dir / f"{run.name}.ipynb").exists():
            run.status = "pending"
        if run.status != "ok" and opts.overrides:
            run.parameters.update(opts.overrides)
            run.parameters["profile"] = opts.profile
    env.setdefault("resumed_utc", []).append(
        _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    todo = sum(r.status != "ok" for r in runs)
    _log(
        stream,
        f"mvbook report: resuming {run_dir} (profile {opts.profile}): "
        f"{len(runs) - todo} ok, {todo} to run",
    )
    failed = execute_runs(run_dir, env, runs, notebooks_dir, opts, stream)
    return run_dir, failed


# --------------------------------------------------------------------------------------------
# Verification


def compare_results(
    expected: Sequence[Mapping[str, Any]],
    actual: Sequence[Mapping[str, Any]],
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
) -> list[str]:
    """Differences between two result lists (matched on chapter, name, data, split).

    Values agree when ``|a - e| <= atol + rtol * |e|`` (both ``null`` also agree); results
    recorded with ``timing=True`` must be present but their values are not compared. Returns one
    line per difference: missing, extra or differing results; ``[]`` when they agree.
    """

    def key(r: Mapping[str, Any]) -> tuple[Any, ...]:
        return (r.get("chapter"), r.get("name"), r.get("data"), r.get("split"))

    def label(k: tuple[Any, ...]) -> str:
        where = "/".join(str(x) for x in k[2:] if x)
        return f"{k[0]} | {k[1]}" + (f" [{where}]" if where else "")

    exp = {key(r): r for r in expected}
    act = {key(r): r for r in actual}
    diffs = []
    for k, e in exp.items():
        if k not in act:
            diffs.append(f"missing: {label(k)} (expected {format_value(e.get('value'))})")
            continue
        ev, av = e.get("value"), act[k].get("value")
        if e.get("timing"):  # wall-clock numbers are reported, not expected to repeat
            continue
        if ev is None or av is None:
            if ev is not av:
                diffs.append(f"differs: {label(k)}: expected {ev}, got {av}")
            continue
        if abs(av - ev) > atol + rtol * abs(ev):
            rel = abs(av - ev) / abs(ev) if ev else math.inf
            diffs.append(
                f"differs: {label(k)}: expected {ev!r}, got {av!r} "
                f"(abs diff {abs(av - ev):.3g}, rel diff {rel:.3g}; rtol {rtol:g}, atol {atol:g})"
            )
    for k, a in act.items():
        if k not in exp:
            diffs.append(f"extra: {label(k)} = {format_value(a.get('value'))}")
    return diffs


def verify_report(
    run_dir: Path,
    opts: ReportOptions,
    *,
    rtol: float = 1e-6,
    atol: float = 0.0,
    stream: TextIO | None = None,
) -> tuple[Path, int, list[str]]:
    """Re-execute the chapters of ``run_dir`` with their recorded parameters into a new folder
    and compare ``results.json``. Returns ``(new folder, number failed, differences)``."""
    env, runs = load_run(run_dir)
    results_path = run_dir / RESULTS_FILE
    if not results_path.exists():
        raise ReportError(f"{run_dir} has no {RESULTS_FILE}: it did not finish; resume it first")
    expected = read_json(results_path).get("results", [])
    opts.profile = env.get("profile", opts.profile)
    opts.kernel = env.get("kernel") or opts.kernel
    notebooks_dir = Path(env.get("notebooks_dir") or opts.notebooks_dir)
    if opts.only:
        keep = {p.stem for p in find_notebooks(notebooks_dir, opts.only)}
        runs = [r for r in runs if r.name in keep]
        expected = [r for r in expected if r.get("chapter") in keep]
    fresh = [NotebookRun(name=r.name, source=r.source, parameters=dict(r.parameters)) for r in runs]
    out = (
        claim_out_dir(opts.out)
        if opts.out
        else new_run_dir(opts.reports_dir, opts.profile, suffix="-verify")
    )
    _log(stream, f"mvbook report: verifying {run_dir} ({len(fresh)} notebooks) -> {out}")
    new_env = dict(env)
    new_env.update(
        {
            "run": out.name,
            "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "finished_utc": None,
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
            "verify_of": str(run_dir.resolve()),
            "verify_tolerance": {"rtol": rtol, "atol": atol},
        }
    )
    new_env.pop("resumed_utc", None)
    new_env.update(capture_environment(notebooks_dir.resolve()))
    write_json(out / ENVIRONMENT_FILE, _env_document(new_env, fresh))
    failed = execute_runs(out, new_env, fresh, notebooks_dir, opts, stream)
    actual = read_json(out / RESULTS_FILE).get("results", [])
    diffs = compare_results(expected, actual, rtol=rtol, atol=atol)
    if diffs:
        _log(
            stream,
            f"verify: {len(diffs)} difference(s) between {run_dir} and {out} "
            f"(rtol {rtol:g}, atol {atol:g}):",
        )
        for line in diffs:
            _log(stream, f"  {line}")
    else:
        _log(
            stream,
            f"verify: all results agree ({len(expected)} compared, rtol {rtol:g}, atol {atol:g})",
        )
    return out, failed, diffs


__all__ = [
    "PROFILES",
    "NotebookRun",
    "ReportError",
    "ReportOptions",
    "compare_results",
    "export_html",
    "find_notebooks",
    "load_config",
    "notebook_parameters",
    "resume_report",
    "run_report",
    "verify_report",
]
