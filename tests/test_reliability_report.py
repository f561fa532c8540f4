"""`mvbook report` under bad parameters, bad folders, damaged run records, concurrent runs and
interrupts: one-line errors (exit 2) before any chapter runs, and the right record."""

from __future__ import annotations

import argparse
import errno
import json
import pathlib
from pathlib import Path

import nbformat
import pytest

from mvbook import cli as mvbook_cli
from mvbook.report import cli as report_cli
from mvbook.report import runner

FIXTURES = Path(__file__).parent / "fixtures" / "notebooks"


def cli(*argv: str) -> int:
    """``mvbook report ...`` through the command line and its error handler."""
    return mvbook_cli.main(["report", *argv])


def test_report_errors_are_handled_by_the_command_line_handler():
    parser = argparse.ArgumentParser(prog="mvbook")
    report_cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["report", "--resume", "/nonexistent/run"])
    assert args.func(args) == 2  # ``mvbook.report.cli.main`` alone: the same handler


def _notebook(path: Path, params: str) -> None:
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(params)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell("print(profile)")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)


@pytest.fixture()
def book(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _notebook(nbs / "01_seeded.ipynb", "profile = 'quick'\nseed = 0\ndevice = 'auto'")
    _notebook(nbs / "02_plain.ipynb", "profile = 'quick'\nscale = 1.0")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "smoke.yaml").write_text("profile: smoke\nparameters:\n  seed: 0\n")
    reports = tmp_path / "reports"
    return ["--notebooks", str(nbs), "--configs", str(configs), "--reports-dir", str(reports),
            "--no-html"], reports


@pytest.fixture()
def fake_execution(monkeypatch):
    """Chapters 'run' instantly and succeed, recording what they received."""
    received = {}

    def execute(source, run_dir, parameters, **kw):
        received[Path(source).stem] = dict(parameters)
        nbformat.write(nbformat.read(str(source), as_version=4),
                       Path(run_dir) / f"{Path(source).stem}.ipynb")
        return "ok", None

    monkeypatch.setattr(runner, "execute_notebook", execute)
    return received


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert err.startswith("mvbook: "), err
    for n in needles:
        assert n in err, (n, err)
    return err


def test_unknown_parameter_fails_before_any_chapter(book, capsys, fake_execution):
    args, reports = book
    assert cli(*args, "--profile", "smoke", "-p", "nosuchparam=1") == 2
    _one_line_error(capsys, "nosuchparam", "01_seeded: device, profile, seed",
                    "02_plain: profile, scale")
    assert not fake_execution and not (reports.exists() and any(reports.iterdir()))


def test_profile_parameter_conflicting_with_the_run_is_refused(book, capsys, fake_execution):
    args, _ = book
    assert cli(*args, "--profile", "smoke", "-p", "profile=quick") == 2
    _one_line_error(capsys, "profile=quick", "--profile")
    assert not fake_execution


def test_bad_device_parameter(book, capsys, fake_execution):
    args, _ = book
    assert cli(*args, "--profile", "smoke", "-p", "device=gpu") == 2
    _one_line_error(capsys, "device=gpu", "cuda")
    assert cli(*args, "--profile", "smoke", "-p", "device=1") == 2  # read as YAML: an int
    _one_line_error(capsys, "device=1", "cuda")


def test_environment_records_what_each_chapter_received(book, fake_execution):
    args, reports = book
    assert cli(*args, "--profile", "smoke", "-p", "seed=5", "-p", "scale=3") == 0
    run = next(reports.iterdir())
    env = json.loads((run / "environment.json").read_text())
    assert env["profile"] == "smoke"
    recorded = {r["name"]: r["parameters"] for r in env["notebooks"]}
    assert recorded == fake_execution
    assert recorded["01_seeded"] == {"seed": 5, "profile": "smoke"}
    assert recorded["02_plain"] == {"scale": 3, "profile": "smoke"}


def test_out_under_a_file_or_a_file(book, tmp_path, capsys):
    args, _ = book
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli(*args, "--profile", "smoke", "--out", str(afile / "sub")) == 2
    _one_line_error(capsys, "afile", "is a file")
    assert cli(*args, "--profile", "smoke", "--out", str(afile)) == 2
    _one_line_error(capsys, "afile")
    assert afile.read_text() == "x"


def test_read_only_file_system_is_one_line(book, tmp_path, capsys, monkeypatch):
    args, _ = book
    out = tmp_path / "ro" / "run"

    def mkdir(self, *a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    assert cli(*args, "--profile", "smoke", "--out", str(out)) == 2
    _one_line_error(capsys, "Read-only file system", str(tmp_path / "ro"))


def _run_folder(tmp_path, status="failed"):
    run = tmp_path / "run"
    run.mkdir()
    env = {"run": "run", "profile": "smoke", "notebooks_dir": str(FIXTURES), "kernel": "python3",
           "notebooks": [{"name": "01_x", "source": "", "parameters": {"profile": "smoke"},
                          "status": status}]}
    (run / "environment.json").write_text(json.dumps(env))
    return run


@pytest.mark.parametrize("content", ["{", "", "[]", '{"notebooks": [1]}'])
def test_resume_with_a_damaged_environment(book, tmp_path, capsys, content):
    args, _ = book
    run = _run_folder(tmp_path)
    (run / "environment.json").write_text(content)
    assert cli(*args, "--resume", str(run)) == 2
    _one_line_error(capsys, "environment.json", "damaged")


@pytest.mark.parametrize("content", ["{", "[]", '{"results": 3}'])
def test_verify_with_damaged_results(book, tmp_path, capsys, content):
    args, _ = book
    run = _run_folder(tmp_path, status="ok")
    (run / "results.json").write_text(content)
    assert cli(*args, "--verify", str(run)) == 2
    _one_line_error(capsys, "results.json", "damaged")


@pytest.mark.parametrize("content", [None, "{", '{"results": 3}'])
def test_verify_report_itself_refuses_an_unfinished_or_damaged_run(tmp_path, content):
    # the library function checks the run as the command line does (load_run), before running
    from mvbook.report import ReportError, ReportOptions, verify_report

    run = _run_folder(tmp_path, status="ok")
    if content is not None:
        (run / "results.json").write_text(content)
    with pytest.raises(ReportError, match="did not finish" if content is None else "damaged"):
        verify_report(run, ReportOptions(reports_dir=tmp_path / "reports"))
    assert not (tmp_path / "reports").exists()


def test_two_runs_in_one_folder_are_refused(book, tmp_path, capsys, fake_execution):
    args, _ = book
    run = _run_folder(tmp_path)
    with runner.run_lock(run):
        assert cli(*args, "--resume", str(run)) == 2
        _one_line_error(capsys, "another mvbook report is running", str(run))
    assert not fake_execution


def test_interrupt_names_the_run_folder(book, tmp_path, capsys, monkeypatch):
    args, _ = book

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "execute_notebook", interrupted)
    out = tmp_path / "out"
    assert cli(*args, "--profile", "smoke", "--out", str(out)) == 130
    err = capsys.readouterr().err
    assert f"--resume {out}" in err and "<run folder>" not in err


# -- every entry point gets the folder checks (mvbook.report.folder) ------------------------


@pytest.mark.parametrize("content", ["{", "", "[]", '{"notebooks": [1]}',
                                     '{"notebooks": [{"parameters": {}}]}'])
def test_load_run_refuses_a_damaged_environment(tmp_path, content):
    from mvbook.report.folder import load_run
    from mvbook.report.options import ReportError

    run = _run_folder(tmp_path)
    (run / "environment.json").write_text(content)
    with pytest.raises(ReportError, match="environment.json is damaged"):
        load_run(run)


def test_load_run_checks_results_on_request(tmp_path):
    from mvbook.report.folder import load_run
    from mvbook.report.options import ReportError

    run = _run_folder(tmp_path, status="ok")
    env, runs = load_run(run)
    assert env["profile"] == "smoke" and [r.name for r in runs] == ["01_x"]
    with pytest.raises(ReportError, match="no results.json"):
        load_run(run, results=True)
    (run / "results.json").write_text('{"results": 3}')
    with pytest.raises(ReportError, match="results.json is damaged"):
        load_run(run, results=True)
    with pytest.raises(ReportError, match="not a report run folder"):
        load_run(run / "results.json")


def test_claim_out_dir_refuses_files_in_the_way(tmp_path):
    from mvbook.report.folder import claim_out_dir
    from mvbook.report.options import ReportError

    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ReportError, match="afile is a file, not a folder"):
        claim_out_dir(afile / "sub" / "run")
    with pytest.raises(ReportError, match="is an existing file"):
        claim_out_dir(afile)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ReportError, match="never overwrites"):
        claim_out_dir(tmp_path / "used")
    assert claim_out_dir(tmp_path / "new" / "run").is_dir()
    assert afile.read_text() == "x"


def test_verify_out_under_a_file_is_refused_before_running(book, tmp_path, capsys,
                                                            fake_execution):
    args, _ = book
    run = _run_folder(tmp_path, status="ok")
    (run / "results.json").write_text('{"results": []}')
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert cli(*args, "--verify", str(run), "--out", str(afile / "sub")) == 2
    _one_line_error(capsys, "afile", "is a file")
    assert not fake_execution
