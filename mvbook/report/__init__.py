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

Runs never overwrite an earlier run: a default folder name that exists gets a suffix, an
explicit ``--out`` that exists is refused. :func:`resume_report` re-enters a run and executes
only the chapters that did not succeed; :func:`verify_report` re-executes a run's chapters
with the same parameters into a new folder and compares the two ``results.json`` within a
tolerance (:func:`compare_results`).

The public API is the names below; for example::

    from mvbook.report import ReportOptions, run_report

    run_dir, failed = run_report(ReportOptions(profile="smoke", only=["01", "10"]))

The modules, in the order a run goes through them:

- :mod:`~mvbook.report.cli`: the ``mvbook report`` subcommand (arguments -> options);
- :mod:`~mvbook.report.options`: :class:`ReportOptions`, ``configs/<profile>.yaml``, the
  chapters of a run and each chapter's parameters;
- :mod:`~mvbook.report.runner`: a run (new or resumed) and its chapter loop;
- :mod:`~mvbook.report.verify`: re-executing a run and comparing its results;
- :mod:`~mvbook.report.chapter`: one chapter executed with papermill, its record and results;
- :mod:`~mvbook.report.folder`: the run folder, ``environment.json`` and ``results.json``;
- :mod:`~mvbook.report.pages`: ``summary.md``, ``summary.html``, ``index.html``, HTML export;
- :mod:`~mvbook.report.environment`: git, packages and hardware of a run.

The report sits above the chapters' own API (:mod:`mvbook.results`, :mod:`mvbook.notebook`),
which never imports it.
"""

from mvbook.report.options import ReportError, ReportOptions
from mvbook.report.runner import resume_report, run_report
from mvbook.report.verify import compare_results, verify_report

__all__ = [
    "ReportError",
    "ReportOptions",
    "compare_results",
    "resume_report",
    "run_report",
    "verify_report",
]
