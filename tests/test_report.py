"""``mvbook report`` on tiny fixture notebooks (tests/fixtures/notebooks, no book chapters).

01_measure: seeds, records two results, draws a plotly figure; 02_fails: raises in its fourth
cell unless ``fail`` is false; 03_plain: records one number (``sleep`` parameter for the
timeout test). One report run is shared by most tests (kernel starts cost seconds).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from mvbook.report import ReportError, compare_results
from mvbook.report import cli as report_cli
from mvbook.report.folder import new_run_dir
from mvbook.report.options import (
    find_notebooks,
    load_config,
    notebook_parameters,
    parse_overrides,
)
from mvbook.results import results_from_notebook

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"
CONFIG = """\
profile: smoke
cell_timeout: 120
parameters:
  seed: 0
  device: cpu
  data: fixture-data
notebooks:
  "01":
    scale: 2.0
  03_plain:
    data: per-notebook-data
"""


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mvbook")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", *argv])
    return args.func(args)


def common(configs: Path, reports: Path) -> list[str]:
    return ["--notebooks", str(FIXTURES), "--configs", str(configs), "--reports-dir", str(reports)]


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("configs")
    (folder / "smoke.yaml").write_text(CONFIG)
    return folder


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, configs):
    """All three fixtures with -p seed=3: exit code, output and run folder."""
    reports = tmp_path_factory.mktemp("reports")
    capture = tmp_path_factory.mktemp("log") / "out.txt"
    import contextlib

    with open(capture, "w") as fh, contextlib.redirect_stdout(fh):
        rc = cli("--profile", "smoke", *common(configs, reports), "-p", "seed=3")
    runs = list(reports.iterdir())
    assert len(runs) == 1
    return rc, capture.read_text(), runs[0]


def results_of(run: Path) -> dict[tuple[str, str], dict]:
    rows = json.loads((run / "results.json").read_text())["results"]
    return {(r["chapter"], r["name"]): r for r in rows}


def test_failure_is_reported_and_others_still_run(first_run):
    rc, out, run = first_run
    assert rc == 1
    assert re.search(
        r"02_fails: FAILED after .*: cell 4 \(In \[\d+\]\): ValueError: "
        r"deliberate failure for the test",
        out,
    ), out
    assert 'raise ValueError("deliberate failure for the test")' in out
    assert re.search(r"\[1/3\] 01_measure: ok in [\d.]+ s \(2 results\)", out), out
    assert re.search(r"\[3/3\] 03_plain: ok in", out), out
    assert "2 of 3 notebooks ok" in out
    env = json.loads((run / "environment.json").read_text())
    status = {n["name"]: n for n in env["notebooks"]}
    assert status["01_measure"]["status"] == "ok"
    assert status["03_plain"]["status"] == "ok"
    failed = status["02_fails"]
    assert failed["status"] == "failed"
    assert failed["error"]["cell"] == 4
    assert failed["error"]["ename"] == "ValueError"
    assert "raise ValueError" in failed["error"]["source"]
    assert "failed" in (run / "summary.md").read_text()


def test_parameters_results_and_summaries(first_run):
    _, _, run = first_run
    assert re.fullmatch(r"\d{8}T\d{6}Z-smoke", run.name)
    env = json.loads((run / "environment.json").read_text())
    params = {n["name"]: n["parameters"] for n in env["notebooks"]}
    assert params["01_measure"] == {
        "seed": 3,
        "device": "cpu",
        "data": "fixture-data",
        "scale": 2.0,
        "profile": "smoke",
    }
    assert params["03_plain"]["data"] == "per-notebook-data"
    results = results_of(run)
    assert set(results) == {
        ("01_measure", "MPJPE"),
        ("01_measure", "PCK@150"),
        ("02_fails", "before the failure"),
        ("03_plain", "answer"),
    }
    pck = results[("01_measure", "PCK@150")]
    assert pck["value"] == 3.5 and pck["unit"] == "%" and pck["lower_is_better"] is False
    mpjpe = results[("01_measure", "MPJPE")]
    assert mpjpe["paper"] == 20.8 and mpjpe["split"] == "test" and mpjpe["profile"] == "smoke"
    assert 0 < mpjpe["value"] < 200  # 2 * 100 * mean of uniform samples
    assert results[("03_plain", "answer")]["data"] == "per-notebook-data"

    summary = (run / "summary.md").read_text()
    assert "| chapter | metric | ours | paper | unit | data | split | note |" in summary
    assert "| 03_plain | answer | 42 |  |  | per-notebook-data |  |  |" in summary
    index = (run / "index.html").read_text()
    for name in ("01_measure", "02_fails", "03_plain"):
        assert f'href="{name}.html"' in index
        assert (run / f"{name}.html").exists()
        assert (run / f"{name}.ipynb").exists()
    assert "<th>ours</th><th>paper</th>" in index
    assert "PCK@150" in (run / "summary.html").read_text()

    # environment capture
    assert set(env["git"]) == {"commit", "dirty"}
    assert env["python"].count(".") == 2
    assert env["packages"]["torch"] and env["packages"]["papermill"]
    assert env["cpu"] and isinstance(env["gpus"], list)
    assert env["seeds"] == [3] and env["profile"] == "smoke" and env["cell_timeout"] == 120
    assert all(n["wall_s"] > 0 for n in env["notebooks"])

    # the executed notebook carries its results in its metadata
    nb = nbformat.read(run / "01_measure.ipynb", as_version=4)
    meta = nb.metadata["mvbook"]
    assert meta["status"] == "ok" and len(meta["results"]) == 2
    # ... and in the metadata of the outputs that record() displayed
    shown = results_from_notebook(nb)
    assert [r["name"] for r in shown] == ["MPJPE", "PCK@150"]
    assert shown[0]["value"] == mpjpe["value"]


def test_html_embeds_plotly_and_needs_no_cdn(first_run):
    _, _, run = first_run
    page = (run / "01_measure.html").read_text()
    assert len(page) > 1_000_000  # plotly.js itself is inline
    assert "window.Plotly = Plotly" in page and "Plotly.newPlot" in page
    assert '<script src="https://cdn.plot.ly' not in page
    assert "require.js" not in page and "unpkg.com" not in page
    sources = re.findall(r'<script[^>]*\bsrc="([^"]+)"', page)
    assert all("mathjax" in s.lower() for s in sources), sources  # math only; optional


def test_resume_skips_notebooks_that_succeeded(first_run, tmp_path, capsys):
    _, _, run = first_run
    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    before = (copy / "01_measure.ipynb").stat().st_mtime_ns
    rc = cli("--resume", str(copy), "-p", "fail=false")
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "01_measure: already ok in this run, skipped" in out
    assert "03_plain: already ok in this run, skipped" in out
    assert re.search(r"02_fails: ok in", out)
    assert (copy / "01_measure.ipynb").stat().st_mtime_ns == before
    results = results_of(copy)
    assert ("02_fails", "after the failure") in results
    assert ("01_measure", "MPJPE") in results
    env = json.loads((copy / "environment.json").read_text())
    assert {n["status"] for n in env["notebooks"]} == {"ok"}
    assert len(env["resumed_utc"]) == 1


def test_never_overwrites_a_run(first_run, configs, tmp_path, capsys):
    _, _, run = first_run
    before = sorted(p.name for p in run.iterdir())
    rc = cli("--profile", "smoke", *common(configs, tmp_path), "--out", str(run))
    err = capsys.readouterr().err
    assert rc == 2
    assert "never overwrites" in err
    assert sorted(p.name for p in run.iterdir()) == before
    first, second = new_run_dir(tmp_path, "smoke"), new_run_dir(tmp_path, "smoke")
    assert first != second and first.is_dir() and second.is_dir()


def test_verify_passes_on_identical_results(first_run, tmp_path, capsys):
    _, _, run = first_run
    rc = cli("--verify", str(run), "--only", "03", "--out", str(tmp_path / "again"))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "verify: all results agree (1 compared, rtol 1e-06, atol 0)" in out
    env = json.loads((tmp_path / "again" / "environment.json").read_text())
    assert env["verify_of"] == str(run.resolve())
    (params,) = [n["parameters"] for n in env["notebooks"]]
    assert params["seed"] == 3 and params["data"] == "per-notebook-data"  # the original's


def test_verify_fails_on_changed_results(first_run, tmp_path, capsys):
    _, _, run = first_run
    copy = tmp_path / "changed"
    shutil.copytree(run, copy)
    data = json.loads((copy / "results.json").read_text())
    for row in data["results"]:
        if row["name"] == "answer":
            row["value"] = 41.0
    (copy / "results.json").write_text(json.dumps(data))
    rc = cli("--verify", str(copy), "--only", "03", "--reports-dir", str(tmp_path / "r"))
    out = capsys.readouterr().out
    assert rc == 1
    assert "differs: 03_plain | answer [per-notebook-data]: expected 41.0, got 42.0" in out
    (new,) = (tmp_path / "r").iterdir()
    assert new.name.endswith("-smoke-verify")


def test_cell_timeout_is_reported(configs, tmp_path, capsys):
    rc = cli(
        "--profile",
        "smoke",
        *common(configs, tmp_path),
        "--only",
        "3",
        "-p",
        "sleep=30",
        "--cell-timeout",
        "1",
        "--no-html",
    )
    out = capsys.readouterr().out
    assert rc == 1
    assert re.search(r"03_plain: FAILED after .*: cell 3 \(In \[\d+\]\): CellTimeoutError", out)


# ----------------------------------------------------------------------------- no kernels


def test_find_notebooks_order_and_selection(tmp_path):
    for name in ("10_b.ipynb", "02_a.ipynb", "1_c.ipynb", "notes.ipynb", "03_x.txt"):
        (tmp_path / name).write_text("{}")
    assert [p.name for p in find_notebooks(tmp_path)] == ["1_c.ipynb", "02_a.ipynb", "10_b.ipynb"]
    assert [p.name for p in find_notebooks(tmp_path, ["10", "01"])] == ["1_c.ipynb", "10_b.ipynb"]
    assert [p.name for p in find_notebooks(tmp_path, ["02_a"])] == ["02_a.ipynb"]
    with pytest.raises(ReportError, match="--only '7' matches no notebook"):
        find_notebooks(tmp_path, ["7"])
    with pytest.raises(ReportError, match="does not exist"):
        find_notebooks(tmp_path / "missing")


def test_config_and_parameters(tmp_path):
    (tmp_path / "quick.yaml").write_text(
        "profile: quick\ncell_timeout: 1800\nparameters: {seed: 0, data: studio}\n"
        "notebooks:\n  '10': {seed: 5}\n  02_x: {data: other}\n"
    )
    config = load_config("quick", tmp_path)
    assert config["cell_timeout"] == 1800
    p10 = notebook_parameters(Path("10_y.ipynb"), "quick", config, {})
    assert p10 == {"seed": 5, "data": "studio", "profile": "quick"}
    p2 = notebook_parameters(Path("02_x.ipynb"), "quick", config, {"seed": 9, "profile": "x"})
    assert p2 == {"seed": 9, "data": "other", "profile": "quick"}
    assert load_config("smoke", tmp_path)["parameters"] == {}  # no file: defaults
    (tmp_path / "full.yaml").write_text("profile: quick\n")
    with pytest.raises(ReportError, match="expected 'full'"):
        load_config("full", tmp_path)
    (tmp_path / "full.yaml").write_text("cell_timeout: -1\n")
    with pytest.raises(ReportError, match="cell_timeout"):
        load_config("full", tmp_path)
    with pytest.raises(ValueError, match="profile"):
        load_config("fast", tmp_path)


def test_config_parameters_the_chapter_does_not_declare_are_left_out(tmp_path):
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("profile = 'quick'\nseed = 0")
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(seed)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "07_no_data.ipynb"
    nbformat.write(nb, path)
    config = {"parameters": {"seed": 3, "data": "studio", "device": "auto"}}
    assert notebook_parameters(path, "quick", config, {}) == {"seed": 3, "profile": "quick"}
    # an explicit -p reaches only the chapters that declare it (a name that no chapter
    # declares is refused before the run starts: check_overrides)
    assert "data" not in notebook_parameters(path, "quick", config, {"data": "x"})
    assert notebook_parameters(path, "quick", config, {"seed": 5})["seed"] == 5


@pytest.mark.parametrize("profile", ["smoke", "quick", "full"])
def test_shipped_configs(profile):
    config = load_config(profile, Path(__file__).parents[1] / "configs")
    assert config["parameters"] == {"seed": 0, "device": "auto", "data": "studio"}
    assert config["cell_timeout"] == {"smoke": 300, "quick": 1800, "full": None}[profile]


def test_parse_overrides():
    assert parse_overrides(["seed=1", "device=cpu", "lr=1e-3", "flag=false", "name="]) == {
        "seed": 1,
        "device": "cpu",
        "lr": 1e-3,
        "flag": False,
        "name": "",
    }
    with pytest.raises(ReportError, match="key=value"):
        parse_overrides(["seed"])


def test_compare_results_tolerance():
    a = [
        {"chapter": "c", "name": "m", "data": None, "split": None, "value": 1.0},
        {"chapter": "c", "name": "gone", "data": None, "split": None, "value": 2.0},
    ]
    b = [
        {"chapter": "c", "name": "m", "data": None, "split": None, "value": 1.0 + 1e-9},
        {"chapter": "c", "name": "new", "data": None, "split": None, "value": 3.0},
    ]
    diffs = compare_results(a, b)
    assert any(d.startswith("missing: c | gone") for d in diffs)
    assert any(d.startswith("extra: c | new") for d in diffs)
    assert len(diffs) == 2
    assert compare_results(a[:1], [dict(b[0], value=1.1)], rtol=1e-6)
    assert not compare_results(a[:1], [dict(b[0], value=1.1)], atol=0.2)
    assert not compare_results([dict(a[0], value=None)], [dict(a[0], value=None)])
    # wall-clock results must be there, but their values are not expected to repeat
    timed = dict(a[0], timing=True)
    assert not compare_results([timed], [dict(timed, value=7.0)])
    assert compare_results([timed], [])[0].startswith("missing: c | m")


def test_help_describes_the_command(capsys):
    with pytest.raises(SystemExit):
        cli("--help")
    text = capsys.readouterr().out
    for word in (
        "--profile",
        "--only",
        "--resume",
        "--verify",
        "--out",
        "-p KEY=VALUE",
        "environment.json",
        "results.json",
        "rtol",
    ):
        assert word in text


def test_nbval_sanitize_config():
    from nbval.plugin import get_sanitize_patterns

    text = (Path(__file__).parents[1] / "configs" / "nbval_sanitize.cfg").read_text()
    patterns = get_sanitize_patterns(text)
    assert len(patterns) >= 10
    sample = (
        '<div id="955a54f2-01a6-48a3-bea7-810ce148c688"></div> <object at 0x7f3a2c1d9e50> '
        "2026-11-23T14:25:17+00:00 train: 100%|##| 3/3 [00:01<00:00, 2.51it/s] done in 12.3 s "
        "model 76d3e48620804a5ab0175d36d13e7bf3 mvbook: profile=smoke seed=0 device=cuda:0 "
        "(NVIDIA H100) torch=2.13.0+cpu"
    )
    for regex, replace in patterns:
        sample = re.sub(regex, replace, sample)
    for gone in (
        "955a54f2",
        "0x7f3a",
        "14:25",
        "2.51it/s",
        "00:01",
        "12.3 s",
        "76d3e486",
        "cuda:0",
        "H100",
        "2.13.0",
    ):
        assert gone not in sample, (gone, sample)
    assert "profile=smoke seed=0" in sample
