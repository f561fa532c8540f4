"""Verify a report run: execute its chapters again and compare the results.

:func:`verify_report` re-executes the chapters of a finished run with the parameters recorded
in its ``environment.json`` into a new folder (``<UTC>-<profile>-verify`` unless ``--out``
names one) and compares the two ``results.json`` with :func:`compare_results`: values agree
when ``|ours - theirs| <= atol + rtol * |theirs|``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from mvbook.report.chapter import NotebookRun
from mvbook.report.environment import capture_environment
from mvbook.report.folder import (
    RESULTS_FILE,
    claim_out_dir,
    load_run,
    new_run_dir,
    read_json,
    utc_now,
    write_environment,
)
from mvbook.report.options import ReportOptions, find_notebooks
from mvbook.report.runner import execute_runs, log, run_command
from mvbook.results import format_value


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
    and compare ``results.json``. Returns ``(new folder, number failed, differences)``.

    The new run keeps ``run_dir``'s profile, kernel, notebooks folder and cell timeout;
    ``opts.only`` restricts both the chapters and the comparison. A run without
    ``results.json`` (it did not finish) or with a damaged one raises
    :class:`~mvbook.report.options.ReportError` (:func:`~mvbook.report.folder.load_run`).
    """
    env, runs = load_run(run_dir, results=True)
    expected = read_json(run_dir / RESULTS_FILE).get("results", [])
    opts = opts.for_run(env)
    if opts.only:
        keep = {p.stem for p in find_notebooks(opts.notebooks_dir, opts.only)}
        runs = [r for r in runs if r.name in keep]
        expected = [r for r in expected if r.get("chapter") in keep]
    fresh = [NotebookRun(name=r.name, source=r.source, parameters=dict(r.parameters)) for r in runs]
    out = (
        claim_out_dir(opts.out)
        if opts.out
        else new_run_dir(opts.reports_dir, opts.profile, suffix="-verify")
    )
    log(stream, f"mvbook report: verifying {run_dir} ({len(fresh)} notebooks) -> {out}")
    new_env = dict(env)
    new_env.update(
        {
            "run": out.name,
            "started_utc": utc_now(),
            "finished_utc": None,
            "command": run_command(),
            "verify_of": str(run_dir.resolve()),
            "verify_tolerance": {"rtol": rtol, "atol": atol},
        }
    )
    new_env.pop("resumed_utc", None)
    new_env.update(capture_environment(opts.notebooks_dir.resolve()))
    write_environment(out, new_env, fresh)
    failed = execute_runs(out, new_env, fresh, opts, stream)
    actual = read_json(out / RESULTS_FILE).get("results", [])
    diffs = compare_results(expected, actual, rtol=rtol, atol=atol)
    if diffs:
        log(
            stream,
            f"verify: {len(diffs)} difference(s) between {run_dir} and {out} "
            f"(rtol {rtol:g}, atol {atol:g}):",
        )
        for line in diffs:
            log(stream, f"  {line}")
    else:
        log(
            stream,
            f"verify: all results agree ({len(expected)} compared, rtol {rtol:g}, atol {atol:g})",
        )
    return out, failed, diffs


__all__ = ["compare_results", "verify_report"]
