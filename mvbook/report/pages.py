"""The pages of a report run: summary tables, ``index.html`` and each chapter as HTML.

- :func:`write_pages` writes ``summary.md`` and ``summary.html`` (the results table:
  chapter, metric, ours, paper, unit, data, split, note; and the status and wall time of each
  chapter) and ``index.html`` (links to the chapters, the summary table and the environment);
- :func:`export_html` exports an executed chapter with nbconvert to standalone HTML that
  renders without network: plotly.js is embedded once per chapter by
  :func:`mvbook.notebook.setup_notebook`, equations are typeset by a local copy of MathJax 2.7
  (:func:`install_mathjax`, from the ``jupyter-server-mathjax`` package, copied once per run
  into ``mathjax/`` beside the pages), and no require.js or widget-manager script is loaded
  from a CDN;
- :func:`write_student_pages` exports a run's chapters without their solutions (the student
  version of each exercise: solution replaced by ``raise NotImplementedError()``, hidden tests
  removed) into ``student/`` (``mvbook report --student``).

Everything here renders what :mod:`mvbook.report.runner` collected; nothing is executed.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mvbook.report.chapter import NotebookRun
from mvbook.report.folder import ENVIRONMENT_FILE, RESULTS_FILE
from mvbook.results import TABLE_COLUMNS, format_html_table, format_markdown_table

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_TQDM_TEXT = re.compile(
    r"\d+%\|.*\|\s*\d+/|\d+(?:\.\d+)?(?:it|s)/(?:s|it)\b|FloatProgress|IntProgress"
)
_TEMPLATE_NAME = "mvbook_offline.html.j2"
MATHJAX_DIR = "mathjax"
# The MathJax configuration the book's copy provides (HTML-CSS output with the STIX web fonts;
# the package ships no CommonHTML output and no TeX fonts).
MATHJAX_CONFIG = "TeX-AMS-MML_HTMLorMML-full,Safe"
# The lab template, minus the require.js <script> from a CDN (nothing in the book needs it:
# plotly.js is embedded by setup_notebook and does not use AMD) and the Mermaid loader from a CDN
# (the book draws no Mermaid diagram), with MathJax from a local copy.
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block html_head_js_mathjax -%}
<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  TeX: {equationNumbers: {autoNumber: "AMS", useLabelIds: true}},
  tex2jax: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]],
            displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
            processEscapes: true, processEnvironments: true},
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null,
               linebreaks: {automatic: true}},
  displayAlign: "center", messageStyle: "none",
  menuSettings: {zoom: "None"}
});
</script>
<script src="{{ resources.mathjax_url }}"></script>
{%- endblock html_head_js_mathjax -%}
"""
# Parts of the MathJax package the pages do not use (other output, accessibility, languages).
_MATHJAX_SKIP = ("localization", "jax/output/SVG", "extensions/a11y", "unpacked", "test")


def mathjax_source() -> Path:
    """The MathJax 2.7 folder shipped by the ``jupyter-server-mathjax`` package.

    Raises:
        FileNotFoundError: the package is not installed (``pip install jupyter-server-mathjax``,
            part of mvbook's ``test`` extra).
    """
    try:
        import jupyter_server_mathjax
    except ImportError as err:
        raise FileNotFoundError(
            "MathJax for offline equations comes from the jupyter-server-mathjax package: "
            "pip install jupyter-server-mathjax"
        ) from err
    static = Path(jupyter_server_mathjax.__file__).parent / "static"
    if not (static / "MathJax.js").is_file():  # pragma: no cover - a broken install
        raise FileNotFoundError(f"{static / 'MathJax.js'} is missing")
    return static


def install_mathjax(folder: Path) -> Path:
    """Copy MathJax into ``folder/mathjax`` (once: an existing copy is kept) and return it."""
    import shutil

    target = Path(folder) / MATHJAX_DIR
    if (target / "MathJax.js").is_file():
        return target
    source = mathjax_source()
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def skip(directory: str, names: list[str]) -> list[str]:
        rel = Path(directory).relative_to(source).as_posix()
        return [n for n in names if (f"{rel}/{n}" if rel != "." else n) in _MATHJAX_SKIP]

    shutil.copytree(source, tmp, ignore=skip)
    if target.exists():  # pragma: no cover - a concurrent copy won
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)
    return target


def export_html(
    executed: Path, destination: Path, *, student: bool = False, mathjax: str | None = None
) -> None:
    """Export an executed notebook to standalone HTML (nbconvert ``lab`` template).

    Widgets need a live kernel: tqdm progress bars are left out (their saved text shows only
    the first update) and other widgets become a one-line note, so no widget manager is
    fetched from a CDN; require.js is not loaded either. plotly figures render
    offline because the notebook itself embeds plotly.js. Equations are typeset by the MathJax
    copy at ``mathjax`` (a URL relative to the page; default: ``mathjax/`` beside
    ``destination``, installed there by :func:`install_mathjax` when missing).
    ``student=True`` exports the student version (:func:`student_notebook`).
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    if student:
        nb = student_notebook(nb)
    if mathjax is None:
        install_mathjax(destination.parent)
        mathjax = MATHJAX_DIR
    offline_notebook(nb)
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        template_file=_TEMPLATE_NAME,
        mathjax_url=f"{mathjax.rstrip('/')}/MathJax.js?config={MATHJAX_CONFIG}",
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": executed.stem}})
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(destination)


def offline_notebook(nb: Any) -> Any:
    """Drop what needs a live kernel or a CDN from an executed notebook, in place: the widget
    state, tqdm progress bars (their saved text shows only the first update), and other
    widgets (a one-line note instead). Returns ``nb``."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        if "outputs" not in cell:
            continue
        kept = []
        for out in cell.outputs:
            data = out.get("data")
            if data and _WIDGET_MIME in data:
                text = data.get("text/plain", "")
                if isinstance(text, list):
                    text = "".join(text)
                if _TQDM_TEXT.search(text):
                    continue  # a progress bar: its text only shows the first update
                out["data"] = {
                    "text/plain": "[interactive widget: open the notebook in Jupyter to use it]"
                }
            kept.append(out)
        cell.outputs = kept
    return nb


_SOLUTION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*(\n|$)",
                       re.MULTILINE | re.DOTALL)
_HIDDEN = re.compile(r"^[ \t]*### BEGIN HIDDEN TESTS[^\n]*\n.*?^[ \t]*### END HIDDEN TESTS[^\n]*(\n|$)",
                     re.MULTILINE | re.DOTALL)


def student_source(source: str) -> str:
    """A cell's source without its solutions and hidden tests, as nbgrader's student version:
    each ``### BEGIN SOLUTION`` ... ``### END SOLUTION`` block becomes ``# YOUR CODE HERE`` and
    ``raise NotImplementedError()`` at the block's indentation; hidden tests are removed."""

    def stub(m: re.Match) -> str:
        indent = m.group(1)
        return f"{indent}# YOUR CODE HERE\n{indent}raise NotImplementedError()" + m.group(2)

    return _HIDDEN.sub("", _SOLUTION.sub(stub, source))


def student_notebook(nb: Any) -> Any:
    """A copy of an (executed) notebook as a student sees it: solution cells without their
    solutions and outputs, check cells without hidden tests."""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        src = cell.get("source", "")
        meta = cell.get("metadata", {}).get("nbgrader") or {}
        if "### BEGIN SOLUTION" in src or "### BEGIN HIDDEN TESTS" in src:
            cell.source = student_source(src)
            if meta.get("solution") and "outputs" in cell:
                cell.outputs = []
                cell.execution_count = None
    return nb


STUDENT_DIR = "student"


def write_student_pages(run_dir: Path, runs: Sequence[NotebookRun] | None = None) -> list[Path]:
    """Export every executed chapter of a run without solutions into ``run_dir/student/``
    (``<chapter>.html`` and an ``index.html``); MathJax is shared with the run's pages.
    ``runs`` default to the chapters listed in the run's ``environment.json``."""
    run_dir = Path(run_dir)
    if runs is None:
        from mvbook.report.folder import load_run

        _, runs = load_run(run_dir)
    out = run_dir / STUDENT_DIR
    out.mkdir(exist_ok=True)
    install_mathjax(run_dir)
    written, rows = [], []
    for run in runs:
        if not run.executed or not (run_dir / run.executed).is_file():
            continue
        page = out / f"{run.name}.html"
        export_html(run_dir / run.executed, page, student=True, mathjax=f"../{MATHJAX_DIR}")
        written.append(page)
        rows.append(f'<li><a href="{html.escape(page.name)}">{html.escape(run.name)}</a></li>')
    body = (
        "<h1>mvbook: the chapters for students</h1><p>Exercises without their solutions; "
        "the checks after each exercise tell whether an answer is right.</p>"
        f"<ul>{''.join(rows)}</ul>"
    )
    (out / "index.html").write_text(_page("mvbook for students", body), encoding="utf-8")
    return written


# --------------------------------------------------------------------------------------------
# Summary and index


def format_seconds(seconds: float | None) -> str:
    """``"12.3 s"`` under two minutes, else ``"4.5 min"``; ``""`` for ``None``."""
    if seconds is None:
        return ""
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


def summary_markdown(
    env: Mapping[str, Any], runs: Sequence[NotebookRun], results: Sequence[Mapping[str, Any]]
) -> str:
    """The Markdown summary: results table, then chapter status and wall time."""
    git = env.get("git") or {}
    commit = (git.get("commit") or "unknown")[:12] + (" (dirty)" if git.get("dirty") else "")
    lines = [
        f"# mvbook report: profile {env.get('profile')}",
        "",
        f"Run {env.get('run')} at {env.get('started_utc')}, commit {commit}, "
        f"device {', '.join(env.get('gpus') or []) or 'CPU: ' + str(env.get('cpu'))}.",
        "Ours: measured in this run (data and split as listed). "
        "Paper: the number the paper reports on its own data.",
        "",
        "## Results",
        "",
        format_markdown_table(results, TABLE_COLUMNS) if results else "No results recorded.\n",
        "## Chapters",
        "",
        "| chapter | status | wall time | results | error |",
        "|---|---|---:|---:|---|",
    ]
    for run in runs:
        err = run.describe_error().replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {run.name} | {run.status} | {format_seconds(run.wall_s)} | {run.results} | {err} |"
        )
    return "\n".join(lines) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; padding: 0 1em; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; }
th { background: #f3f3f3; }
.ok { color: #17702a; } .failed { color: #b00020; font-weight: bold; }
.pending, .running { color: #8a6d00; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; }
"""


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head>"
        f"<body>{body}</body></html>\n"
    )


def summary_html_table(runs: Sequence[NotebookRun], results: Sequence[Mapping[str, Any]]) -> str:
    """The results table as HTML, each chapter name linking to its exported page."""
    links = {r.name: r.html for r in runs if r.html}
    return (
        format_html_table(results, TABLE_COLUMNS, links=links)
        if results
        else ("<p>No results recorded.</p>")
    )


def index_html(
    env: Mapping[str, Any], runs: Sequence[NotebookRun], results: Sequence[Mapping[str, Any]]
) -> str:
    """``index.html``: chapters (links, status, time, errors), results table, environment."""
    rows = []
    for run in runs:
        name = html.escape(run.name)
        link = f'<a href="{html.escape(run.html)}">{name}</a>' if run.html else name
        nb_link = f' (<a href="{html.escape(run.executed)}">ipynb</a>)' if run.executed else ""
        err = html.escape(run.describe_error())
        rows.append(
            f'<tr><td>{link}{nb_link}</td><td class="{html.escape(run.status)}">'
            f'{html.escape(run.status)}</td><td style="text-align:right">'
            f'{format_seconds(run.wall_s)}</td><td style="text-align:right">{run.results}</td>'
            f"<td>{err}</td></tr>"
        )
    git = env.get("git") or {}
    env_rows = [
        ("profile", env.get("profile")),
        ("started (UTC)", env.get("started_utc")),
        ("finished (UTC)", env.get("finished_utc")),
        ("commit", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}"),
        ("python", env.get("python")),
        ("torch", (env.get("packages") or {}).get("torch")),
        ("CPU", f"{env.get('cpu')} ({env.get('cpu_count')} cores)"),
        ("GPU", ", ".join(env.get("gpus") or []) or "none"),
        ("seeds", ", ".join(str(s) for s in env.get("seeds") or [])),
    ]
    env_table = "".join(
        f'<tr><th style="text-align:left">{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>'
        for k, v in env_rows
    )
    body = (
        f"<h1>mvbook report: profile {html.escape(str(env.get('profile')))}</h1>"
        "<h2>Chapters</h2><table><thead><tr><th>chapter</th><th>status</th><th>wall time</th>"
        f"<th>results</th><th>error</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
        "<h2>Results</h2><p>Ours: measured in this run (data and split as listed). "
        "Paper: the number the paper reports on its own data.</p>"
        f"{summary_html_table(runs, results)}"
        f"<h2>Environment</h2><table>{env_table}</table>"
        f'<p>Details: <a href="{ENVIRONMENT_FILE}">{ENVIRONMENT_FILE}</a>, '
        f'<a href="{RESULTS_FILE}">{RESULTS_FILE}</a>, <a href="summary.md">summary.md</a>.</p>'
    )
    return _page(f"mvbook report {env.get('run')}", body)


def write_pages(
    run_dir: Path,
    env: Mapping[str, Any],
    runs: Sequence[NotebookRun],
    results: Sequence[Mapping[str, Any]],
) -> None:
    """Write ``summary.md``, ``summary.html`` and ``index.html`` of a run into ``run_dir``."""
    (run_dir / "summary.md").write_text(summary_markdown(env, runs, results), encoding="utf-8")
    (run_dir / "summary.html").write_text(
        _page("mvbook results", summary_html_table(runs, results)), encoding="utf-8"
    )
    (run_dir / "index.html").write_text(index_html(env, runs, results), encoding="utf-8")


__all__ = [
    "export_html",
    "install_mathjax",
    "mathjax_source",
    "offline_notebook",
    "student_notebook",
    "student_source",
    "write_student_pages",
    "format_seconds",
    "index_html",
    "summary_html_table",
    "summary_markdown",
    "write_pages",
]
