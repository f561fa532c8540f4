"""``mvbook report``: execute the book's notebooks into a report run (see :mod:`mvbook.report`).

:func:`add_parser` registers the subcommand; :func:`main` turns its arguments into one
:class:`~mvbook.report.options.ReportOptions` and starts, resumes or verifies a run.

Examples::

    mvbook report --profile quick                 # the whole book -> reports/<UTC>-quick/
    mvbook report --profile smoke --only 01,10    # two chapters
    mvbook report -p seed=1 -p device=cpu         # override parameters of every chapter
    mvbook report --resume reports/20261123T142501Z-quick   # finish an interrupted run
    mvbook report --verify reports/20261123T142501Z-quick   # re-run and compare results

Exit status: 0 when every notebook ran (and, with ``--verify``, every result agreed);
1 when a notebook failed or results differ; 2 when the run could not start.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mvbook.cli import handle_errors
from mvbook.report.folder import load_run
from mvbook.report.options import ReportError, ReportOptions, default_root, parse_overrides
from mvbook.report.runner import resume_report, run_report
from mvbook.report.verify import verify_report
from mvbook.runtime import PROFILES

EPILOG = """\
Each notebook NN_*.ipynb of the notebooks folder is executed in book order with papermill
(kernel python3) into a new folder reports/<UTC time>-<profile>/ that is never overwritten.
Parameters: configs/<profile>.yaml ('parameters' for every chapter, 'notebooks' per chapter
by number or file stem, 'cell_timeout' in seconds), then -p key=value; 'profile' is always
passed. A failing notebook is reported with its cell and error; the others still run and the
exit status is 1.

The run folder holds the executed notebooks (.ipynb) and their offline HTML, results.json
(everything the chapters passed to mvbook.results.record), summary.md / summary.html (chapter,
metric, ours, paper, unit, data, split), index.html (links to every chapter) and
environment.json (git commit and dirty flag, Python and package versions, CPU/GPU, profile,
seeds, per-notebook parameters, status and wall time).

--resume DIR executes, in DIR, only the notebooks that did not succeed there.
--verify DIR re-executes DIR's notebooks with DIR's parameters into a new folder
(<UTC>-<profile>-verify, next to DIR unless --out or --reports-dir is given) and compares
results.json: |ours - theirs| <= atol + rtol*|theirs|
(default rtol 1e-6, atol 0); differences are printed and the exit status is 1.

exit status: 0 all ok; 1 a notebook failed or results differ; 2 the run could not start.
"""


def _only(text: str) -> list[str]:
    items = [s.strip() for s in text.split(",") if s.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list such as 01,10")
    return items


def _timeout(text: str) -> float:
    if text.lower() in ("none", "0", "off"):
        return 0.0
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0 (0 or 'none': no limit)")
    return value


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``report`` subcommand to the ``mvbook`` command line."""
    parser = subparsers.add_parser(
        "report",
        help="execute the notebooks with papermill into a report run (results, HTML, summary)",
        description="Execute the book's notebooks with papermill into a new report run: "
        "executed notebooks, offline HTML, results table, environment.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="sizes of every chapter: smoke (seconds), quick (default; minutes "
        "on a 2-core CPU), full (GPU, real data); --resume and --verify "
        "keep the profile of their run",
    )
    parser.add_argument(
        "--only",
        type=_only,
        metavar="LIST",
        help="comma-separated chapter numbers or file stems, e.g. 01,10",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="DIR",
        help="run folder to create (refused if it exists and is not empty); "
        "default: <reports-dir>/<UTC time>-<profile>",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="parameters",
        help="override a notebook parameter in every chapter (value read as "
        "YAML: 1, 0.5, true, cpu); repeatable",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--resume",
        type=Path,
        metavar="DIR",
        help="continue the run in DIR: skip notebooks that succeeded there",
    )
    mode.add_argument(
        "--verify",
        type=Path,
        metavar="DIR",
        help="re-run DIR's notebooks with the same parameters into a new folder "
        "and compare results.json",
    )
    parser.add_argument(
        "--rtol", type=float, default=1e-6, help="relative tolerance of --verify (default 1e-6)"
    )
    parser.add_argument(
        "--atol", type=float, default=0.0, help="absolute tolerance of --verify (default 0)"
    )
    parser.add_argument(
        "--notebooks",
        type=Path,
        metavar="DIR",
        default=None,
        help="folder of the NN_*.ipynb notebooks (default: notebooks/)",
    )
    parser.add_argument(
        "--configs",
        type=Path,
        metavar="DIR",
        default=None,
        help="folder of <profile>.yaml (default: configs/)",
    )
    parser.add_argument(
        "--reports-dir",
        type=Path,
        metavar="DIR",
        default=None,
        help="parent of new run folders (default: reports/)",
    )
    parser.add_argument(
        "--cell-timeout",
        type=_timeout,
        metavar="SECONDS",
        default=None,
        help="per-cell timeout, overriding the profile's config (0: none)",
    )
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel (default python3)")
    parser.add_argument("--no-html", action="store_true", help="skip the HTML export")
    parser.add_argument("--student", action="store_true",
                        help="also export the chapters without solutions into <run>/student/")
    parser.set_defaults(func=main)
    return parser


@handle_errors
def main(args: argparse.Namespace) -> int:
    """Entry point of ``mvbook report``: returns the exit status (0 all ok; 1 a notebook
    failed or results differ; 2 the run could not start, with a one-line error from
    :func:`mvbook.cli.handle_errors`; 130 interrupted)."""
    root = default_root()
    opts = ReportOptions(
        profile=args.profile or "quick",
        notebooks_dir=args.notebooks or root / "notebooks",
        configs_dir=args.configs or root / "configs",
        reports_dir=args.reports_dir or root / "reports",
        only=args.only,
        out=args.out,
        overrides=parse_overrides(args.parameters),
        cell_timeout=args.cell_timeout,
        kernel=args.kernel,
        html=not args.no_html,
    )
    try:
        if args.verify is not None:
            load_run(args.verify, results=True)  # a damaged run is refused before anything runs
            if args.parameters:
                raise ReportError("--verify re-uses the parameters of the run; drop -p")
            if args.reports_dir is None:  # the new run goes next to the one it verifies
                opts.reports_dir = args.verify.resolve().parent
            _, failed, diffs = verify_report(args.verify, opts, rtol=args.rtol, atol=args.atol)
            return 1 if failed or diffs else 0
        if args.resume is not None:
            run_dir, failed = resume_report(args.resume, opts)
        else:
            run_dir, failed = run_report(opts)
        if getattr(args, "student", False):
            from mvbook.report.pages import write_student_pages

            write_student_pages(run_dir)
            print(f"student pages: {run_dir / 'student'}", file=sys.stderr)
        return 1 if failed else 0
    except KeyboardInterrupt as err:
        run_dir = getattr(err, "run_dir", None)
        hint = (f"continue with --resume {run_dir}" if run_dir is not None
                else "no run folder was written yet")
        print(f"mvbook report: interrupted; {hint}", file=sys.stderr)
        return 130
