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
"""

from __future__ import annotations

import datetime as _dt
import html
import importlib.metadata
import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mvbook.results import (
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

ENVIRONMENT_FILE = "environment.json"
RESULTS_FILE = "results.json"
NOTEBOOK_PATTERN = re.compile(r"^(\d+)_.+\.ipynb$")
KEY_PACKAGES = (
    "mvbook",
    "torch",
    "numpy",
    "scipy",
    "matplotlib",
    "plotly",
    "ipywidgets",
    "tqdm",
    "papermill",
    "nbclient",
    "nbconvert",
    "nbformat",
    "ipykernel",
    "nbval",
    "pyyaml",
    "pybullet",
    "opencv-python-headless",
    "kornia",
    "pillow",
)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


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
# Environment


def _run_git(args: Sequence[str], cwd: Path) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def git_info(path: Path) -> dict[str, Any]:
    """``{"commit": sha or None, "dirty": bool or None}`` of the checkout holding ``path``
    (read-only git commands)."""
    commit = _run_git(["rev-parse", "HEAD"], path)
    status = _run_git(["status", "--porcelain"], path)
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if status is None else bool(status.strip()),
    }


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_names() -> list[str]:
    try:
        import torch

        if torch.cuda.is_available():
            return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001 - a broken CUDA setup is reported as "no GPU"
        pass
    return []


def package_versions(names: Iterable[str] = KEY_PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def capture_environment(root: Path) -> dict[str, Any]:
    """Git state, Python, packages, platform, CPU and GPU of this machine."""
    return {
        "git": git_info(root),
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpus": gpu_names(),
        "packages": package_versions(),
    }


# --------------------------------------------------------------------------------------------
# Executing one notebook


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
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NotebookRun:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})

    def describe_error(self) -> str:
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


# --------------------------------------------------------------------------------------------
# HTML export

_WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
_TQDM_TEXT = re.compile(
    r"\d+%\|.*\|\s*\d+/|\d+(?:\.\d+)?(?:it|s)/(?:s|it)\b|FloatProgress|IntProgress"
)
_TEMPLATE_NAME = "mvbook_offline.html.j2"
# The lab template, minus the require.js <script> from a CDN (nothing in the book needs it:
# plotly.js is embedded by setup_notebook and does not use AMD).
_TEMPLATE = """{%- extends 'index.html.j2' -%}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
"""


def export_html(executed: Path, destination: Path) -> None:
    """Export an executed notebook to standalone HTML (nbconvert ``lab`` template).

    Widgets need a live kernel: tqdm progress bars are left out (their saved text shows only
    the first update) and other widgets become a one-line note, so no widget manager is
    fetched from a CDN; require.js is not loaded either. plotly figures render
    offline because the notebook itself embeds plotly.js.
    """
    import jinja2
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
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
    exporter = HTMLExporter(
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({_TEMPLATE_NAME: _TEMPLATE})],
        template_file=_TEMPLATE_NAME,
    )
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": executed.stem}})
    tmp = destination.with_name(destination.name + ".tmp")
    tmp.write_text(body, encoding="utf-8")
    tmp.replace(destination)


# --------------------------------------------------------------------------------------------
# Summary, index, environment


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _fmt_seconds(seconds: float | None) -> str:
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
            f"| {run.name} | {run.status} | {_fmt_seconds(run.wall_s)} | {run.results} | {err} |"
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
            f'{_fmt_seconds(run.wall_s)}</td><td style="text-align:right">{run.results}</td>'
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
    _write_json(run_dir / ENVIRONMENT_FILE, doc)
    _write_json(
        run_dir / RESULTS_FILE,
        {
            "run": env.get("run"),
            "profile": env.get("profile"),
            "results": [r.to_json() for r in results],
        },
    )
    (run_dir / "summary.md").write_text(summary_markdown(doc, runs, results), encoding="utf-8")
    (run_dir / "summary.html").write_text(
        _page("mvbook results", summary_html_table(runs, results)), encoding="utf-8"
    )
    (run_dir / "index.html").write_text(index_html(doc, runs, results), encoding="utf-8")
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
            _write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
            continue
        _log(
            stream,
            f"{label}: running (profile {opts.profile}, "
            f"timeout {_fmt_seconds(env.get('cell_timeout')) or 'none'} per cell)",
        )
        run.status = "running"
        run.error = None
        run.started_utc = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        _write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
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
                f"{label}: ok in {_fmt_seconds(run.wall_s)} ({_plural(run.results, 'result')})",
            )
        else:
            _log(
                stream, f"{label}: FAILED after {_fmt_seconds(run.wall_s)}: {run.describe_error()}"
            )
            src = (run.error or {}).get("source") or ""
            for line in src.strip().splitlines()[:8]:
                _log(stream, f"    | {line}")
            tb = (run.error or {}).get("traceback") or ""
            tail = [t for t in tb.strip().splitlines() if t.strip()][-6:]
            for line in tail:
                _log(stream, f"    {line}")
        _write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
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
    _write_json(run_dir / ENVIRONMENT_FILE, _env_document(env, runs))
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

    Values agree when ``|a - e| <= atol + rtol * |e|`` (both ``null`` also agree). Returns one
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
    _write_json(out / ENVIRONMENT_FILE, _env_document(new_env, fresh))
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
