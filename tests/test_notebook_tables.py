"""Rendered tables of the chapters (mvbook.notebook.format_table / show_table)."""

from __future__ import annotations

import pytest

from mvbook.notebook import format_table, show_table


def test_format_table_aligns_text_and_escapes_html():
    text, markup = format_table(["method", "mean"], [["a<b", 1.234], ["long name", float("nan")]])
    lines = text.splitlines()
    assert lines[0].startswith("method") and lines[1].split() == ["a<b", "1.2"]
    assert len({len(line) for line in lines[:2]}) == 1  # columns aligned
    assert "a&lt;b" in markup and "<td" in markup and "nan" not in markup


def test_format_table_names_a_bad_row():
    with pytest.raises(ValueError, match="every row must have 2 cells"):
        format_table(["a", "b"], [[1.0]])


def test_show_table_prints_outside_jupyter(capsys):
    show_table(["x", "y"], [["r", 2.0]], title="t", digits=2)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "t" and "2.00" in out
