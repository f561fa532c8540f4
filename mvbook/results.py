"""Recording the book's measurements: ``record(...)`` in chapters, collection in reports.

Every chapter states its numbers with one call::

    from mvbook.results import record
    record("MPJPE algebraic", mpjpe_mm, paper=20.8, data="studio", split="test",
           note="paper: Human3.6M, ours: studio quick profile")

``record`` does three things, whoever runs the notebook:

1. It appends the result to an in-process list (:func:`recorded` returns a copy; re-recording
   the same chapter/name/data/split replaces the earlier entry).
2. When the environment variable ``MVBOOK_RESULTS`` names a file (``mvbook report`` sets it
   for each notebook it executes) it appends one JSON line to that file.
3. Inside IPython/Jupyter it displays one compact line (``recorded: MPJPE = 21.3 mm (paper
   20.8 mm)``) whose display metadata carries the result under the key ``"mvbook_result"``.
   An executed notebook thus holds its results in its own outputs, and
   :func:`results_from_notebook` reads them back (the report uses this when no JSON-lines file
   exists).

:func:`show_results` then shows a chapter's results as one table (HTML that never wraps into
unreadable text in Jupyter and in exported HTML, Markdown and plain text beside it), and
:func:`results_table` returns that table's representations for any list of results.

Outside the report runner (plain papermill, nbval, a Python shell) everything still works:
the JSON-lines file is simply not written.

A result is a plain dict with the keys of :data:`RESULT_FIELDS`: ``chapter`` (from the
environment variable ``MVBOOK_CHAPTER``, set by the report runner to the notebook's file
stem, else ``None``), ``name``, ``value``, ``paper``, ``unit``, ``data``, ``split``, ``note``,
``lower_is_better``, ``timing`` (a wall-clock measurement: reported, but not expected to
repeat, so ``mvbook report --verify`` does not compare it), ``profile`` (environment
variable ``MVBOOK_PROFILE``, else ``None``).
Non-finite values are kept in memory but stored as ``null`` in JSON.
"""

from __future__ import annotations

import html
import json
import math
import numbers
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

RESULTS_ENV = "MVBOOK_RESULTS"
CHAPTER_ENV = "MVBOOK_CHAPTER"
PROFILE_ENV = "MVBOOK_PROFILE"
METADATA_KEY = "mvbook_result"
METADATA_LIST_KEY = "mvbook_results"
RESULT_FIELDS = (
    "chapter",
    "name",
    "value",
    "paper",
    "unit",
    "data",
    "split",
    "note",
    "lower_is_better",
    "timing",
    "profile",
)
TABLE_COLUMNS = ("chapter", "name", "value", "paper", "unit", "data", "split", "note")
TABLE_HEADERS = {
    "chapter": "chapter",
    "name": "metric",
    "value": "ours",
    "paper": "paper",
    "unit": "unit",
    "data": "data",
    "split": "split",
    "note": "note",
}

_LOCK = threading.Lock()
_RECORDED: list[Result] = []


class Result(dict):
    """One recorded measurement: a dict with the keys of :data:`RESULT_FIELDS`.

    Displays itself as a one-row table in Jupyter (``_repr_html_``) and as one line of text
    elsewhere. When :func:`record` has already displayed it (as one compact line), displaying
    the returned value again (``record(...)`` as the last line of a cell) shows nothing, so each
    result appears once.
    """

    _shown: bool = False

    @property
    def key(self) -> tuple[Any, ...]:
        """Identity of a result: ``(chapter, name, data, split)``."""
        return (self.get("chapter"), self.get("name"), self.get("data"), self.get("split"))

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe copy (non-finite floats become ``None``)."""
        return {k: _json_safe(self.get(k)) for k in RESULT_FIELDS}

    def __repr__(self) -> str:
        return format_text_row(self)

    def _repr_html_(self) -> str:
        return format_html_table([self], columns=_row_columns(self))

    def _repr_markdown_(self) -> str:
        return format_markdown_table([self], columns=_row_columns(self))

    def _ipython_display_(self) -> None:
        if self._shown:
            return
        _display(self)


def _row_columns(result: Mapping[str, Any]) -> tuple[str, ...]:
    cols = [c for c in TABLE_COLUMNS if c != "chapter" or result.get("chapter")]
    return tuple(c for c in cols if c != "note" or result.get("note"))


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _as_number(value: Any, argname: str, *, allow_none: bool) -> float | None:
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{argname} must be a number, got None")
    if isinstance(value, bool):
        raise TypeError(f"{argname} must be a number, got bool {value!r}")
    if isinstance(value, numbers.Real):
        return float(value)
    # torch tensors and numpy arrays with exactly one element
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    try:
        count = numel() if callable(numel) else numel
    except TypeError:  # pragma: no cover - exotic objects
        count = None
    if count == 1 and hasattr(value, "item"):
        item = value.item()
        if isinstance(item, bool) or not isinstance(item, numbers.Real):
            raise TypeError(f"{argname} must hold a real number, got {item!r}")
        return float(item)
    raise TypeError(
        f"{argname} must be a real number or a one-element tensor/array, got {type(value).__name__}"
    )


def _optional_str(value: Any, argname: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{argname} must be a str or None, got {type(value).__name__}")
    return value


def make_result(
    name: str,
    value: Any,
    *,
    paper: Any = None,
    unit: str | None = "mm",
    data: str | None = None,
    split: str | None = None,
    note: str | None = None,
    lower_is_better: bool = True,
    timing: bool = False,
    chapter: str | None = None,
    profile: str | None = None,
) -> Result:
    """Validate the arguments of :func:`record` and build a :class:`Result` (nothing stored).

    ``chapter`` and ``profile`` default to the environment variables ``MVBOOK_CHAPTER`` and
    ``MVBOOK_PROFILE``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    if not isinstance(lower_is_better, bool):
        raise TypeError(f"lower_is_better must be a bool, got {lower_is_better!r}")
    if not isinstance(timing, bool):
        raise TypeError(f"timing must be a bool, got {timing!r}")
    return Result(
        chapter=_optional_str(
            chapter if chapter is not None else os.environ.get(CHAPTER_ENV), "chapter"
        ),
        name=name,
        value=_as_number(value, "value", allow_none=False),
        paper=_as_number(paper, "paper", allow_none=True),
        unit=_optional_str(unit, "unit"),
        data=_optional_str(data, "data"),
        split=_optional_str(split, "split"),
        note=_optional_str(note, "note"),
        lower_is_better=lower_is_better,
        timing=timing,
        profile=_optional_str(
            profile if profile is not None else os.environ.get(PROFILE_ENV), "profile"
        ),
    )


def record(
    name: str,
    value: Any,
    *,
    paper: float | None = None,
    unit: str | None = "mm",
    data: str | None = None,
    split: str | None = None,
    note: str | None = None,
    lower_is_better: bool = True,
    timing: bool = False,
    show: bool = True,
) -> Result:
    """Record one measurement of a chapter; the report collects it into its summary table.

    Args:
        name: metric name as it should appear in the summary, e.g. ``"MPJPE (algebraic)"``.
        value: our number: a Python/NumPy real or a one-element tensor (moved to CPU).
        paper: the paper's number for the same metric (``None`` when it has none). The summary
            labels it as the paper's; ``note`` says on which data it was measured.
        unit: unit of ``value`` and ``paper`` (default ``"mm"``; ``"%"``, ``None``...).
        data: data source of ours, e.g. ``"studio"`` or a dataset name.
        split: evaluation split, e.g. ``"test"``.
        note: free text (protocol, deviations from the paper).
        lower_is_better: whether smaller values are better (MPJPE) or not (PCK, AP).
        timing: ``True`` for wall-clock measurements (throughput, seconds): they are reported
            but not expected to repeat, so ``mvbook report --verify`` skips their values.
        show: ``False`` shows nothing now: a cell that records many results then calls
            :func:`show_results`, whose table carries them all in its display metadata.

    Returns:
        The :class:`Result` (a dict). In Jupyter the result has already been displayed as one
        compact line; showing the return value again displays nothing. :func:`show_results`
        shows all of a chapter's results as one table.

    Raises:
        ValueError: ``name`` empty. TypeError: ``value``/``paper`` not real numbers, text
        fields not strings.
    """
    result = make_result(
        name,
        value,
        paper=paper,
        unit=unit,
        data=data,
        split=split,
        note=note,
        lower_is_better=lower_is_better,
        timing=timing,
    )
    with _LOCK:
        _RECORDED[:] = [r for r in _RECORDED if r.key != result.key]
        _RECORDED.append(result)
        path = os.environ.get(RESULTS_ENV)
        if path:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(result.to_json(), sort_keys=True) + "\n")
    if show:
        _display(result)
    return result


def recorded() -> list[Result]:
    """Copies of the results recorded in this process, in order of recording."""
    with _LOCK:
        return [Result(r) for r in _RECORDED]


def clear() -> None:
    """Forget the results recorded in this process (the JSON-lines file is left alone)."""
    with _LOCK:
        _RECORDED.clear()


def _display(result: Result) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        return
    if get_ipython() is None:
        return
    line = format_recorded_line(result)
    bundle = {
        "text/plain": line,
        "text/html": f'<div class="mvbook-recorded" style="font-size:85%;color:#555">'
        f"{html.escape(line)}</div>",
    }
    display(bundle, raw=True, metadata={METADATA_KEY: result.to_json()})
    result._shown = True


def format_recorded_line(result: Mapping[str, Any]) -> str:
    """The one line :func:`record` shows: ``"recorded: MPJPE = 21.3 mm (paper 20.8 mm)"``."""
    unit = f" {result['unit']}" if result.get("unit") else ""
    text = f"recorded: {result.get('name')} = {format_value(result.get('value'))}{unit}"
    if result.get("paper") is not None:
        text += f" (paper {format_value(result.get('paper'))}{unit})"
    return text


RESULTS_TABLE_COLUMNS = ("name", "value", "paper", "unit", "data", "split", "note")


def results_table(
    results: Iterable[Mapping[str, Any]],
    columns: Iterable[str] | None = None,
    *,
    title: str | None = None,
) -> dict[str, str]:
    """One table of results as a display bundle: ``text/html``, ``text/markdown``, ``text/plain``.

    ``columns`` default to :data:`RESULTS_TABLE_COLUMNS` without the columns that are empty in
    every row (``paper`` when no result has a paper number, ...). The HTML never wraps a
    metric name or a number (only the note column wraps) and scrolls sideways when wider than
    the page, in Jupyter and in exported HTML alike.
    """
    rows = list(results)
    if columns is None:
        columns = tuple(
            c for c in RESULTS_TABLE_COLUMNS
            if c in ("name", "value") or any(r.get(c) not in (None, "") for r in rows)
        )
    columns = tuple(columns)
    heading_md = f"**{title}**\n\n" if title else ""
    heading_html = f"<p><b>{html.escape(title)}</b></p>" if title else ""
    if not rows:
        empty = "No results recorded."
        return {"text/plain": empty, "text/markdown": empty, "text/html": f"<p>{empty}</p>"}
    plain = "\n".join(format_text_row(r) for r in rows)
    if title:
        plain = f"{title}\n{plain}"
    return {
        "text/plain": plain,
        "text/markdown": heading_md + format_markdown_table(rows, columns),
        "text/html": heading_html + wrap_table_html(format_html_table(rows, columns)),
    }


TABLE_CSS = (
    ".mvbook-results, .mvbook-table {border-collapse: collapse; margin: 0.5em 0; font-size: 90%;}"
    " .mvbook-results th, .mvbook-results td, .mvbook-table th, .mvbook-table td"
    " {white-space: nowrap; padding: 0.2em 0.6em; border: 1px solid #ddd;"
    " text-align: left !important;}"
    " .mvbook-results td.num, .mvbook-table td.num {text-align: right !important;"
    " font-variant-numeric: tabular-nums;}"
    " .mvbook-results td.note {white-space: normal; min-width: 16em; max-width: 36em;}"
)


def wrap_table_html(table: str) -> str:
    """An HTML table inside a sideways-scrolling box, with the book's table style: cells never
    wrap (a long table scrolls instead of breaking labels and numbers over lines)."""
    return (
        f'<div class="mvbook-table-box" style="overflow-x:auto;max-width:100%">'
        f"<style>{TABLE_CSS}</style>{table}</div>"
    )


def show_results(
    results: Iterable[Mapping[str, Any]] | None = None,
    *,
    title: str | None = "Results of this chapter",
    columns: Iterable[str] | None = None,
) -> None:
    """Show results as one table: those recorded in this process by default.

    In Jupyter (and in exported HTML) an HTML table; elsewhere the plain-text lines are printed.
    """
    rows = recorded() if results is None else list(results)
    bundle = results_table(rows, columns, title=title)
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(bundle, raw=True, metadata={METADATA_LIST_KEY: [dict(Result(r).to_json()) for r in rows]})
    else:
        print(bundle["text/plain"])


# --------------------------------------------------------------------------------------------
# Reading results back


def _dedupe(results: Iterable[Mapping[str, Any]]) -> list[Result]:
    out: dict[tuple[Any, ...], Result] = {}
    for r in results:
        res = Result({k: r.get(k) for k in RESULT_FIELDS})
        out.pop(res.key, None)  # the latest recording wins and moves to the end
        out[res.key] = res
    return list(out.values())


def load_results_jsonl(path: str | os.PathLike[str], chapter: str | None = None) -> list[Result]:
    """Results from a JSON-lines file written by :func:`record` (later lines win).

    ``chapter`` fills in results whose chapter is missing. A missing file gives ``[]``; a
    malformed line raises ``ValueError`` naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{lineno}: not a JSON line ({err})") from err
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        if chapter is not None and not row.get("chapter"):
            row["chapter"] = chapter
        rows.append(row)
    return _dedupe(rows)


def results_from_notebook(nb: Any, chapter: str | None = None) -> list[Result]:
    """Results displayed by :func:`record` in an executed notebook (path or ``nbformat`` node).

    Reads the ``"mvbook_result"`` entry of each output's metadata (one result, shown by
    :func:`record`) and the ``"mvbook_results"`` entry (a list, shown by :func:`show_results`).
    """
    if isinstance(nb, (str, os.PathLike)):
        import nbformat

        nb = nbformat.read(os.fspath(nb), as_version=4)
    rows = []
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            meta = output.get("metadata") or {}
            found = [meta.get(METADATA_KEY)]
            many = meta.get(METADATA_LIST_KEY)
            if isinstance(many, list):
                found += many
            for row in found:
                if isinstance(row, Mapping):
                    row = dict(row)
                    if chapter is not None and not row.get("chapter"):
                        row["chapter"] = chapter
                    rows.append(row)
    return _dedupe(rows)


# --------------------------------------------------------------------------------------------
# Formatting


def format_value(value: Any) -> str:
    """Numbers with up to 4 significant decimals (``"20.8"``, ``"0.1235"``); ``None`` -> ``""``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
            return f"{v:.4g}"
        return f"{v:.4f}".rstrip("0").rstrip(".")
    return str(value)


def format_text_row(result: Mapping[str, Any]) -> str:
    """``"chapter | MPJPE: 21.3 mm (paper 20.8 mm) [studio/test]"``."""
    unit = f" {result['unit']}" if result.get("unit") else ""
    text = f"{result.get('name')}: {format_value(result.get('value'))}{unit}"
    if result.get("paper") is not None:
        text += f" (paper {format_value(result.get('paper'))}{unit})"
    where = "/".join(str(result[k]) for k in ("data", "split") if result.get(k))
    if where:
        text += f" [{where}]"
    if result.get("chapter"):
        text = f"{result['chapter']} | {text}"
    if result.get("note"):
        text += f" - {result['note']}"
    return text


def format_markdown_table(
    results: Iterable[Mapping[str, Any]], columns: Iterable[str] = TABLE_COLUMNS
) -> str:
    """A Markdown table of results (columns from :data:`TABLE_COLUMNS`)."""
    columns = tuple(columns)

    def cell(value: Any) -> str:
        return format_value(value).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(TABLE_HEADERS.get(c, c) for c in columns) + " |",
        "|" + "|".join("---:" if c in ("value", "paper") else "---" for c in columns) + "|",
    ]
    for r in results:
        lines.append("| " + " | ".join(cell(r.get(c)) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def format_html_table(
    results: Iterable[Mapping[str, Any]],
    columns: Iterable[str] = TABLE_COLUMNS,
    links: Mapping[str, str] | None = None,
) -> str:
    """An HTML table of results; ``links`` maps a chapter to the href of its page."""
    columns = tuple(columns)
    links = links or {}
    head = "".join(f"<th>{html.escape(TABLE_HEADERS.get(c, c))}</th>" for c in columns)
    rows = []
    for r in results:
        cells = []
        for c in columns:
            text = html.escape(format_value(r.get(c)))
            if c == "chapter" and r.get("chapter") in links:
                text = f'<a href="{html.escape(links[r["chapter"]])}">{text}</a>'
            if c in ("value", "paper"):
                align = ' class="num" style="text-align:right"'
            elif c == "note":
                align = ' class="note"'
            else:
                align = ""
            cells.append(f"<td{align}>{text}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (
        '<table class="mvbook-results">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )
