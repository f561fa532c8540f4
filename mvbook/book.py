"""The book as a browsable site, built from a report run: ``mvbook book REPORT_DIR``.

:func:`build_book` takes the executed chapters of a report run (``<run>/NN_*.ipynb``, in book
order), strips what needs a live kernel (:func:`mvbook.report.pages.offline_notebook`), adds
a front page and the run's results page (``summary.md``), and builds a static HTML site with
Sphinx, MyST-NB (nothing is executed: the run's outputs are shown) and the Sphinx Book Theme.
Everything the pages load is inside the site: plotly.js is embedded in the chapters, equations
are typeset by the MathJax 2.7 copy of ``jupyter-server-mathjax`` (copied into the site), and
the theme's assets are local. Open ``<out>/index.html``.

The builders come with the ``test`` extra (``sphinx``, ``myst-nb``, ``sphinx-book-theme``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

_CHAPTER = "[0-9][0-9]_*.ipynb"

_CONF = '''\
project = "mvbook"
author = "mvbook"
extensions = ["myst_nb", "sphinx.ext.mathjax"]
nb_execution_mode = "off"
nb_output_stderr = "remove-warn"
myst_enable_extensions = ["dollarmath", "amsmath"]
html_theme = "sphinx_book_theme"
html_title = "mvbook"
html_static_path = ["_static"]
html_theme_options = {{"use_download_button": False, "use_fullscreen_button": False,
                      "use_repository_button": False, "show_toc_level": 2}}
# MathJax 2.7 from the site itself (the HTML-CSS output with the STIX web fonts)
mathjax_path = "mathjax/MathJax.js?config={config}"
mathjax2_config = {{
    "tex2jax": {{"inlineMath": [["\\\\(", "\\\\)"]], "displayMath": [["\\\\[", "\\\\]"]],
                "processEscapes": True,
                "ignoreClass": "document", "processClass": "math|output_area"}},
    "HTML-CSS": {{"availableFonts": [], "preferredFont": None, "webFont": "STIX-Web",
                 "imageFont": None}},
    "messageStyle": "none",
}}
exclude_patterns = ["_build"]
suppress_warnings = ["mystnb.unknown_mime_type", "misc.highlighting_failure", "myst.header"]
'''


class BookError(Exception):
    """A problem with the run folder or the build (one line, exit 2)."""


def chapters_of(run_dir: Path) -> list[Path]:
    """The executed chapters of a report run, in book order."""
    return sorted(Path(run_dir).glob(_CHAPTER))


def _title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


def build_book(run_dir: Path, out: Path | None = None, *, quiet: bool = True) -> Path:
    """Build the site of the report run ``run_dir`` into ``out`` (default ``run_dir/book``).

    Returns the site folder (its ``index.html`` is the front page). Raises :class:`BookError`
    when the run has no executed chapter or Sphinx fails.
    """
    import nbformat

    from mvbook.report.pages import MATHJAX_CONFIG, install_mathjax, offline_notebook

    run_dir = Path(run_dir)
    chapters = chapters_of(run_dir)
    if not chapters:
        raise BookError(f"{run_dir}: no executed chapter NN_*.ipynb (is it a report run?)")
    out = Path(out) if out is not None else run_dir / "book"
    try:
        from sphinx.cmd.build import build_main
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise BookError("the book needs sphinx, myst-nb and sphinx-book-theme: "
                        "pip install -e '.[test]'") from err
    with tempfile.TemporaryDirectory(prefix="mvbook-book-") as tmp:
        src = Path(tmp) / "src"
        (src / "_static").mkdir(parents=True)
        install_mathjax(src / "_static")
        (src / "conf.py").write_text(_CONF.format(config=MATHJAX_CONFIG), encoding="utf-8")
        entries, rows = [], []
        for path in chapters:
            nb = offline_notebook(nbformat.read(str(path), as_version=4))
            nb.metadata.pop("mvbook", None)
            nbformat.write(nb, str(src / path.name))
            entries.append(path.stem)
            rows.append(f"| [{path.stem[:2]}]({path.stem}.ipynb) | {_title(nb) or path.stem} |")
        pages = list(entries)
        summary = run_dir / "summary.md"
        if summary.is_file():
            text = summary.read_text(encoding="utf-8").replace("# mvbook report", "# Results", 1)
            (src / "results.md").write_text(text, encoding="utf-8")
            pages.append("results")
        toc = "\n".join(pages)
        front = (
            "# mvbook\n\nAn executable textbook on multiview 3D human pose with little or no "
            f"labelling, as executed in the report run `{run_dir.name}`.\n\n"
            "| chapter | title |\n|---|---|\n" + "\n".join(rows) + "\n\n"
            + ("The numbers of every chapter beside the papers' are on the "
               "[results page](results.md).\n\n" if summary.is_file() else "")
            + f"```{{toctree}}\n:maxdepth: 1\n:caption: Chapters\n\n{toc}\n```\n"
        )
        (src / "index.md").write_text(front, encoding="utf-8")
        args = [str(src), str(out), "-b", "html", "-j", "1", "-E"]
        if quiet:
            args.append("-q")
        code = build_main(args)
        if code != 0:
            raise BookError(f"sphinx-build failed with exit status {code}")
    return out


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``book`` subcommand to the ``mvbook`` command line."""
    parser = subparsers.add_parser(
        "book",
        help="a browsable site of the book from a report run (Sphinx, offline)",
        description="Build a static site from a report run's executed chapters: chapters in "
        "order with their figures and equations, and the results page. Nothing is fetched "
        "at build or view time.",
    )
    parser.add_argument("run", type=Path, metavar="REPORT_DIR", help="a report run folder")
    parser.add_argument("--out", type=Path, metavar="DIR", default=None,
                        help="site folder (default: REPORT_DIR/book)")
    parser.set_defaults(func=main)
    return parser


def main(args: argparse.Namespace) -> int:
    """Entry point of ``mvbook book``: 0 built; a :class:`BookError` is reported by the command
    line's handler (:func:`mvbook.cli.handle_errors`: one line, exit 2)."""
    out = build_book(args.run, args.out)
    print(out / "index.html")
    return 0


__all__ = ["BookError", "build_book", "chapters_of"]

if __name__ == "__main__":  # pragma: no cover
    from mvbook.cli import handle_errors

    sys.exit(handle_errors(main)(argparse.Namespace(run=Path(sys.argv[1]), out=None)))
