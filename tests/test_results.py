"""mvbook.results.record and mvbook.notebook.setup_notebook, in this process (no kernels)."""

from __future__ import annotations

import json
import math

import nbformat
import numpy as np
import pytest
import torch

from mvbook import results as res
from mvbook.notebook import MATPLOTLIB_DEFAULTS, PLOTLY_RENDERER, setup_notebook
from mvbook.results import (
    format_markdown_table,
    load_results_jsonl,
    record,
    recorded,
    results_from_notebook,
)


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    for var in (res.RESULTS_ENV, res.CHAPTER_ENV, res.PROFILE_ENV):
        monkeypatch.delenv(var, raising=False)
    res.clear()
    yield
    res.clear()


def test_record_outside_the_runner_keeps_results_in_process():
    r = record("MPJPE", 21.5, paper=20.8, data="studio", split="test", note="ours: studio")
    assert r == {
        "chapter": None,
        "name": "MPJPE",
        "value": 21.5,
        "paper": 20.8,
        "unit": "mm",
        "data": "studio",
        "split": "test",
        "note": "ours: studio",
        "lower_is_better": True,
        "timing": False,
        "profile": None,
    }
    assert recorded() == [r]
    assert "MPJPE: 21.5 mm (paper 20.8 mm) [studio/test]" in repr(r)
    html = r._repr_html_()
    assert "<th>ours</th>" in html and "21.5" in html and "20.8" in html
    recorded()[0]["value"] = 0  # copies
    assert recorded()[0]["value"] == 21.5


def test_record_writes_json_lines_when_the_runner_asks(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv(res.RESULTS_ENV, str(path))
    monkeypatch.setenv(res.CHAPTER_ENV, "10_learnable_triangulation")
    monkeypatch.setenv(res.PROFILE_ENV, "smoke")
    record("MPJPE", torch.tensor(30.25), paper=22.6)
    record("PCK", np.float32(0.75), unit="%", lower_is_better=False)
    record("MPJPE", torch.tensor([29.5]), paper=22.6)  # same key: replaces
    record("broken", float("nan"), unit=None)
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4 and lines[0]["chapter"] == "10_learnable_triangulation"
    assert lines[0]["profile"] == "smoke" and lines[3]["value"] is None
    loaded = load_results_jsonl(path)
    assert [r["name"] for r in loaded] == ["PCK", "MPJPE", "broken"]
    assert loaded[1]["value"] == 29.5
    mem = recorded()
    assert [r["name"] for r in mem] == ["PCK", "MPJPE", "broken"]
    assert math.isnan(mem[2]["value"])


def test_load_results_jsonl_errors(tmp_path):
    assert load_results_jsonl(tmp_path / "missing.jsonl") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"name": "a", "value": 1}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_results_jsonl(bad)
    ok = tmp_path / "ok.jsonl"
    ok.write_text('{"name": "a", "value": 1}\n\n')
    (row,) = load_results_jsonl(ok, chapter="03_x")
    assert row["chapter"] == "03_x" and row["unit"] is None


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"name": "", "value": 1.0}, ValueError, "name"),
        ({"name": "m", "value": "1.0"}, TypeError, "value"),
        ({"name": "m", "value": True}, TypeError, "value"),
        ({"name": "m", "value": torch.ones(2)}, TypeError, "value"),
        ({"name": "m", "value": None}, TypeError, "value"),
        ({"name": "m", "value": 1.0, "paper": "20"}, TypeError, "paper"),
        ({"name": "m", "value": 1.0, "data": 3}, TypeError, "data"),
        ({"name": "m", "value": 1.0, "lower_is_better": 1}, TypeError, "lower_is_better"),
    ],
)
def test_record_validates(kwargs, error, match):
    with pytest.raises(error, match=match):
        record(**kwargs)
    assert recorded() == []


def test_results_from_notebook_reads_display_metadata():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("record(...)")
    row = res.make_result("AP@25", 0.9, unit=None, lower_is_better=False).to_json()
    cell.outputs = [
        nbformat.v4.new_output(
            "display_data", data={"text/plain": "x"}, metadata={res.METADATA_KEY: row}
        ),
        nbformat.v4.new_output("stream", text="hello"),
    ]
    nb.cells = [cell]
    (found,) = results_from_notebook(nb, chapter="13_selfpose3d")
    assert found["name"] == "AP@25" and found["chapter"] == "13_selfpose3d"


def test_tables():
    rows = [
        res.make_result("a|b", 1234567.0, paper=0.00012, chapter="01_x"),
        res.make_result("c", 12.0, unit=None, chapter="01_x"),
    ]
    md = format_markdown_table(rows)
    assert md.splitlines()[0] == "| chapter | metric | ours | paper | unit | data | split | note |"
    assert "| 01_x | a\\|b | 1.235e+06 | 0.00012 | mm |" in md
    assert "| 01_x | c | 12 |  |  |" in md
    html = res.format_html_table(rows, links={"01_x": "01_x.html"})
    assert '<a href="01_x.html">01_x</a>' in html and "a|b" in html


def test_setup_notebook(capsys):
    import matplotlib as mpl
    import plotly.io as pio

    device = setup_notebook(seed=5, device="cpu", profile="smoke")
    assert device == torch.device("cpu")
    first = torch.rand(3)
    out = capsys.readouterr().out
    assert out.startswith("mvbook: profile=smoke seed=5 device=cpu torch=")
    assert pio.renderers.default == PLOTLY_RENDERER
    assert mpl.rcParams["figure.dpi"] == MATPLOTLIB_DEFAULTS["figure.dpi"]
    pio.renderers._to_activate = []
    assert setup_notebook(seed=5, device="auto", verbose=False).type in ("cpu", "cuda")
    assert torch.equal(torch.rand(3), first)  # same seed, same numbers
    assert pio.renderers._to_activate == []  # plotly.js is not embedded a second time
    assert capsys.readouterr().out == ""
    with pytest.raises(TypeError, match="seed"):
        setup_notebook(seed=1.5)
    with pytest.raises(ValueError, match="profile"):
        setup_notebook(profile="fast")


def test_plotly_renderer_embeds_plotly_js_without_cdn():
    import plotly.graph_objects as go
    import plotly.io as pio

    setup_notebook(verbose=False)
    renderer = pio.renderers["mvbook_notebook"]
    bundle = renderer.to_mimebundle(go.Figure(go.Scatter(x=[1], y=[2])).to_dict())
    assert "Plotly.newPlot" in bundle["text/html"]
    assert "<script src=" not in bundle["text/html"]
    assert renderer.include_plotlyjs is False and renderer.connected is False
