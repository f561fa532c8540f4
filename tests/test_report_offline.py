"""Exported HTML typesets equations offline (a local MathJax copy) and has a student version
without solutions; a headless Chromium, where installed, checks the rendered page."""

from __future__ import annotations

import shutil
import subprocess

import nbformat
import pytest

from mvbook.report.chapter import NotebookRun
from mvbook.report.pages import (
    MATHJAX_DIR,
    export_html,
    install_mathjax,
    student_notebook,
    student_source,
    write_student_pages,
)

SOLUTION = '''def f(x):
    """Doubles."""
    ### BEGIN SOLUTION
    return 2 * x
    ### END SOLUTION
'''
CHECK = '''assert f(2) == 4, "expected 4"
### BEGIN HIDDEN TESTS
assert f(21) == 42, "expected 42"
### END HIDDEN TESTS
print("ok")'''


def _chapter() -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    sol = nbformat.v4.new_code_cell(SOLUTION, execution_count=1)
    sol.metadata["nbgrader"] = {"solution": True, "grade": False, "grade_id": "ch01-ex1-solution",
                                "locked": False, "schema_version": 3}
    chk = nbformat.v4.new_code_cell(CHECK, execution_count=2, outputs=[
        nbformat.v4.new_output("stream", name="stdout", text="ok\n")])
    chk.metadata["nbgrader"] = {"solution": False, "grade": True, "grade_id": "ch01-ex1-check",
                                "locked": True, "points": 1, "schema_version": 3}
    nb.cells = [
        nbformat.v4.new_markdown_cell(r"# Title" "\n\n" r"Inline $\mathbf X = K[R\mid t]$ and"
                                      "\n\n" r"$$\lambda \tilde{\mathbf u} = P \tilde{\mathbf X}$$"),
        sol, chk,
    ]
    return nb


def test_student_source_keeps_indentation_and_drops_hidden_tests():
    out = student_source(SOLUTION)
    assert "return 2 * x" not in out and "BEGIN SOLUTION" not in out
    assert '    """Doubles."""\n    # YOUR CODE HERE\n    raise NotImplementedError()\n' in out
    checked = student_source(CHECK)
    assert "42" not in checked and "HIDDEN" not in checked and 'expected 4"' in checked


def test_export_html_loads_a_local_mathjax(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_chapter(), str(path))
    export_html(path, tmp_path / "01_x.html")
    page = (tmp_path / "01_x.html").read_text(encoding="utf-8")
    assert '<script src="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"></script>' in page
    assert "cdnjs" not in page and "https://cdn" not in page
    mj = tmp_path / MATHJAX_DIR
    assert (mj / "MathJax.js").is_file()
    assert (mj / "config" / "TeX-AMS-MML_HTMLorMML-full.js").is_file()
    assert any((mj / "fonts" / "HTML-CSS" / "STIX-Web" / "woff").iterdir())
    assert not (mj / "localization").exists()          # what the pages never load stays out
    assert "### BEGIN SOLUTION" in page                    # the book's page keeps the solutions


def test_install_mathjax_keeps_an_existing_copy(tmp_path):
    first = install_mathjax(tmp_path)
    marker = first / "MathJax.js"
    marker.write_text("// kept", encoding="utf-8")
    assert install_mathjax(tmp_path) == first and marker.read_text() == "// kept"


def test_student_pages_have_no_solutions(tmp_path):
    nbformat.write(_chapter(), str(tmp_path / "01_x.ipynb"))
    run = NotebookRun(name="01_x", source="notebooks/01_x.ipynb", parameters={}, status="ok",
                      executed="01_x.ipynb")
    (page,) = write_student_pages(tmp_path, [run])
    text = page.read_text(encoding="utf-8")
    assert page == tmp_path / "student" / "01_x.html"
    assert "BEGIN SOLUTION" not in text and "HIDDEN" not in text and "NotImplementedError" in text
    assert 'src="../mathjax/MathJax.js' in text
    assert '<a href="01_x.html">' in (tmp_path / "student" / "index.html").read_text()
    assert student_notebook(_chapter()).cells[1].outputs == []


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium (Debian package chromium)")
def test_chromium_typesets_the_equations_offline(tmp_path):
    path = tmp_path / "01_x.ipynb"
    nbformat.write(_chapter(), str(path))
    export_html(path, tmp_path / "01_x.html")
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
           "--allow-file-access-from-files", "--virtual-time-budget=15000",
           "--proxy-server=127.0.0.1:9", "--dump-dom", (tmp_path / "01_x.html").as_uri()]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert 'class="MathJax' in dom, "MathJax did not typeset the page"
    body = dom.split("<body", 1)[1]
    # the TeX sources survive only inside MathJax's <script type="math/tex"> elements
    import re

    visible = re.sub(r"<script.*?</script>", "", body, flags=re.S)
    visible = re.sub(r"<[^>]+>", "", visible)
    assert "$" not in visible and "\\mathbf" not in visible
