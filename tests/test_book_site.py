"""The book site (``mvbook book``) built from a small report run, checked in headless Chromium:
no console errors, no request outside the site, equations typeset, a plotly figure drawn,
every internal link resolves; a screenshot per page goes into the test's temporary folder."""

from __future__ import annotations

import functools
import http.server
import re
import shutil
import subprocess
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import nbformat
import pytest

pytest.importorskip("myst_nb")
pytest.importorskip("sphinx_book_theme")

from mvbook.book import build_book  # noqa: E402

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
# not errors: what the theme logs on every page, and MathJax 2's font probe (an @font-face
# "MathJax_Blank" whose source is about:blank, refused without any request)
_BENIGN = ("[PST]", "Got invalid theme mode", "Access to font at 'about:blank'")
# headless Chromium logs every console message at one level: errors are told by their text
# (exceptions, failed or refused loads, CORS blocks); WebGL performance notices are not errors
_ERROR = re.compile(r"Uncaught|Failed to load|[Ee]rror|Refused|blocked|net::ERR")


def _figure_outputs():
    """What a chapter's first figure leaves: plotly.js (embedded once by setup_notebook's
    renderer), then the figure."""
    import plotly.graph_objects as go
    import plotly.io as pio
    from plotly.offline import get_plotlyjs

    from mvbook.notebook import configure_plotly

    configure_plotly()
    fig = go.Figure(go.Scatter3d(x=[0, 1], y=[0, 1], z=[0, 1], mode="markers"))
    bundle = pio.renderers["mvbook_notebook"].to_mimebundle(fig.to_dict())
    library = {"text/html": f'<script type="text/javascript">{get_plotlyjs()}</script>'}
    return [nbformat.v4.new_output("display_data", data=library),
            nbformat.v4.new_output("display_data", data=bundle)]


def _run(folder: Path) -> Path:
    run = folder / "run"
    run.mkdir()
    one = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 1 · Cameras\n\nThe projection $\\lambda\\tilde{\\mathbf u} = "
                                      "K[R\\mid\\mathbf t]\\tilde{\\mathbf X}$, and\n\n"
                                      "$$\\mathbb E\\,\\lVert e\\rVert \\approx 0.383.$$\n\n"
                                      "Next: [chapter 2](02_b.ipynb)."),
        nbformat.v4.new_code_cell("fig.show()", execution_count=1, outputs=_figure_outputs()),
    ])
    two = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# 2 · Epipoles\n\nWith $F\\mathbf e_a = \\mathbf 0$."),
        nbformat.v4.new_code_cell("print(1)", execution_count=1, outputs=[
            nbformat.v4.new_output("stream", name="stdout", text="1\n")]),
    ])
    nbformat.write(one, str(run / "01_a.ipynb"))
    nbformat.write(two, str(run / "02_b.ipynb"))
    (run / "summary.md").write_text("# mvbook report: profile smoke\n\n## Results\n\n"
                                    "| metric | ours |\n|---|---:|\n| DLT error | 4.4 |\n")
    return run


def test_book_names_a_folder_without_chapters_in_one_line(tmp_path, capsys):
    from mvbook.cli import main

    assert main(["book", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mvbook: {tmp_path}: no executed chapter NN_*.ipynb (is it a report run?)"]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    folder = tmp_path_factory.mktemp("book")
    return build_book(_run(folder), folder / "site")


def test_build_book_lists_the_chapters_in_order(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    assert index.index("01_a.html") < index.index("02_b.html") < index.index("results.html")
    for page in site.glob("*.html"):
        text = page.read_text(encoding="utf-8")
        external = re.findall(r'<(?:script|link|img)[^>]+(?:src|href)="(https?:)?//', text)
        assert not external, f"{page.name} loads from outside the site"


@pytest.mark.skipif(CHROMIUM is None, reason="no headless Chromium (Debian package chromium)")
def test_book_site_in_headless_chromium(site, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    # a dead proxy: any request leaving this machine's loopback fails and is logged
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-extensions",
             "--no-first-run", "--enable-unsafe-swiftshader", "--proxy-server=127.0.0.1:9", "--virtual-time-budget=15000",
             "--enable-logging=stderr", "--v=0", "--window-size=1200,1400"]
    pages = ["index.html", "01_a.html", "02_b.html", "results.html"]
    try:
        for name in pages:
            url = urljoin(base, name)
            run = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True,
                                 text=True, timeout=120)
            console = [line for line in run.stderr.splitlines() if ":CONSOLE" in line
                       and _ERROR.search(line) and not any(b in line for b in _BENIGN)]
            assert not console, f"{name}: console errors {console}"
            dom = run.stdout
            assert "<body" in dom, f"{name}: no page rendered"
            body = dom.split("<body", 1)[1]
            markup = re.sub(r"<(script|style)\b.*?</\1>", "", body, flags=re.S)
            visible = re.sub(r"<[^>]+>", "", markup)
            assert "$" not in visible and "\\(" not in visible, f"{name}: raw TeX left in the page"
            if name in ("01_a.html", "02_b.html"):
                assert 'class="MathJax' in dom, f"{name}: equations not typeset"
            if name == "01_a.html":
                assert "plot-container" in dom or "js-plotly-plot" in dom, "no plotly figure drawn"
            for href in re.findall(r'<a\b[^>]*\bhref="([^"]+)"', markup):
                parsed = urlparse(urljoin(url, href))
                if parsed.scheme in ("mailto", "javascript") or not parsed.path:
                    continue
                if parsed.netloc != urlparse(base).netloc:
                    continue  # a link out (plotly's logo), not a request: only internal ones must resolve
                target = site / parsed.path.lstrip("/")
                assert target.exists(), f"{name}: broken link {href}"
            subprocess.run([CHROMIUM, *flags, f"--screenshot={shots / (name[:-5] + '.png')}", url],
                           capture_output=True, timeout=120)
            assert (shots / f"{name[:-5]}.png").stat().st_size > 10_000
    finally:
        server.shutdown()
    print("screenshots:", sorted(p.name for p in shots.iterdir()), "in", shots)
