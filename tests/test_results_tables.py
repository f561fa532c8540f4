"""Results as tables: record() shows one compact line, show_results/show_table one table."""

from __future__ import annotations

import pytest

from mvbook import results as res
from mvbook.notebook import format_markdown, show_table


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.delenv(res.RESULTS_ENV, raising=False)
    monkeypatch.delenv(res.CHAPTER_ENV, raising=False)
    res.clear()
    yield
    res.clear()


class _Shell:
    """Stands in for IPython: collects what display() receives."""

    def __init__(self, monkeypatch):
        self.shown = []
        import IPython
        import IPython.display

        monkeypatch.setattr(IPython, "get_ipython", lambda: self)
        monkeypatch.setattr(IPython.display, "display",
                            lambda obj, raw=False, metadata=None: self.shown.append((obj, metadata)))


def test_record_shows_one_compact_line_with_its_metadata(monkeypatch):
    shell = _Shell(monkeypatch)
    res.record("MPJPE algebraic", 21.25, paper=20.8, data="studio", split="test", note="n")
    assert len(shell.shown) == 1
    bundle, meta = shell.shown[0]
    assert bundle["text/plain"] == "recorded: MPJPE algebraic = 21.25 mm (paper 20.8 mm)"
    assert "<table" not in bundle["text/html"] and "<th" not in bundle["text/html"]
    assert meta[res.METADATA_KEY]["value"] == 21.25


def test_show_results_renders_one_table_of_the_chapter(monkeypatch):
    shell = _Shell(monkeypatch)
    res.record("MPJPE volumetric (softmax)", 30.0, data="studio", split="test")
    res.record("PCK", 91.5, unit="%", lower_is_better=False, data="studio", split="test")
    shell.shown.clear()
    res.show_results()
    (bundle, _), = shell.shown
    markup = bundle["text/html"]
    assert markup.count("<table") == 1 and markup.count("<tr>") == 3
    assert "white-space: nowrap" in markup and "overflow-x:auto" in markup
    assert "MPJPE volumetric (softmax)" in markup            # never cut
    assert "paper" not in markup.split("<tbody>")[0]          # no paper number: no column
    md = bundle["text/markdown"].splitlines()
    assert md[0] == "**Results of this chapter**" and md[2].startswith("| metric | ours | unit |")
    assert md[4].startswith("| MPJPE volumetric (softmax) | 30 | mm |")
    assert md[-1].startswith("| PCK | 91.5 | % |")


def test_results_table_outside_jupyter_prints_lines(capsys):
    res.record("a", 1.0)
    res.show_results(title="t")
    assert capsys.readouterr().out.splitlines() == ["t", "a: 1 mm"]
    assert res.results_table([])["text/plain"] == "No results recorded."


def test_show_table_gives_html_markdown_and_text(monkeypatch):
    shell = _Shell(monkeypatch)
    show_table(["action", "algebraic", "volumetric (softmax)"],
               [["getup_face_down", 20.123, 25.0], ["getup_face_up", float("nan"), 1.0]], title="per action")
    (bundle, _), = shell.shown
    assert "getup_face_down" in bundle["text/html"] and "getup_face_up" in bundle["text/html"]
    assert "white-space: nowrap" in bundle["text/html"]
    assert bundle["text/markdown"].startswith("**per action**")
    assert "| getup_face_up |  | 1.0 |" in bundle["text/markdown"]
    assert format_markdown(["a", "b"], [["x|y", 2.0]], digits=2).splitlines()[2] == "| x\\|y | 2.00 |"


def test_quiet_records_come_back_from_the_table_metadata(monkeypatch):
    import nbformat

    shell = _Shell(monkeypatch)
    res.record("a", 1.0, show=False)
    res.record("b", 2.0, show=False)
    assert shell.shown == []
    res.show_results()
    (bundle, meta), = shell.shown
    out = nbformat.v4.new_output("display_data", data=bundle, metadata=meta)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[out])])
    assert [r["name"] for r in res.results_from_notebook(nb, chapter="01")] == ["a", "b"]
