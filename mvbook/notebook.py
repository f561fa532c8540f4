"""Notebook setup shared by every chapter: ``device = setup_notebook(seed=seed, device=device)``.

Called once, right after the parameters cell. It

- seeds Python, NumPy and torch through :func:`mvbook.runtime.seed_everything` (the book's
  one seeding helper; the same seed and profile give the same metrics on the same machine);
- resolves ``device`` (``"auto"`` picks CUDA when present) via
  :func:`mvbook.runtime.resolve_device`;
- makes plotly figures self-contained: the default renderer becomes
  ``"plotly_mimetype+mvbook_notebook"``. ``plotly_mimetype`` serves JupyterLab;
  ``mvbook_notebook`` is plotly's ``notebook`` renderer (which embeds the plotly.js library
  inline, once per notebook, before the first figure) without the per-figure MathJax CDN
  script, so an executed notebook exported to HTML renders its 3D figures with no network;
- sets matplotlib defaults (figure size and resolution) so the chapters look alike;
- prints one line: profile, seed, device and torch version.

Outside IPython (a plain Python script) the same calls are made; plotly then only changes
its default renderer.
"""

from __future__ import annotations

import os
import re

import torch

from mvbook.runtime import PROFILE_ENV, check_profile, resolve_device, seed_everything

PLOTLY_RENDERER = "plotly_mimetype+mvbook_notebook"
MATPLOTLIB_DEFAULTS = {
    "figure.figsize": (7.0, 4.2),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "image.cmap": "viridis",
}

_CDN_MATHJAX = re.compile(r"<script src=\"https://[^\"]*mathjax[^\"]*\"></script>", re.IGNORECASE)


def _register_plotly_renderer() -> None:
    import plotly.io as pio
    from plotly.io._base_renderers import NotebookRenderer

    if "mvbook_notebook" in pio.renderers:
        return

    class OfflineNotebookRenderer(NotebookRenderer):
        """plotly's ``notebook`` renderer (plotly.js inline) without CDN MathJax per figure."""

        def to_mimebundle(self, fig_dict):  # type: ignore[override]
            bundle = super().to_mimebundle(fig_dict)
            bundle["text/html"] = _CDN_MATHJAX.sub("", bundle["text/html"])
            return bundle

    pio.renderers["mvbook_notebook"] = OfflineNotebookRenderer()


def configure_plotly() -> None:
    """Make ``PLOTLY_RENDERER`` plotly's default renderer (idempotent: plotly.js once)."""
    import plotly.io as pio

    _register_plotly_renderer()
    # Setting the default again would embed plotly.js a second time.
    if pio.renderers.default != PLOTLY_RENDERER:
        pio.renderers.default = PLOTLY_RENDERER


def configure_matplotlib() -> None:
    """Apply :data:`MATPLOTLIB_DEFAULTS` (and PNG output for the inline backend)."""
    import matplotlib as mpl

    mpl.rcParams.update(MATPLOTLIB_DEFAULTS)
    try:
        from IPython import get_ipython

        if get_ipython() is not None:
            from matplotlib_inline.backend_inline import set_matplotlib_formats

            set_matplotlib_formats("png")
    except ImportError:  # pragma: no cover - matplotlib-inline comes with ipykernel
        pass


def setup_notebook(
    seed: int = 0,
    device: str | torch.device = "auto",
    *,
    profile: str | None = None,
    verbose: bool = True,
) -> torch.device:
    """Seed everything, configure plotly and matplotlib, and resolve the device.

    Args:
        seed: seed for Python, NumPy and torch (an int).
        device: ``"auto"`` (CUDA when present, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``
            or a ``torch.device``.
        profile: only printed; defaults to the environment variable ``MVBOOK_PROFILE``.
        verbose: print the one-line summary.

    Returns:
        The resolved ``torch.device``.

    Raises:
        TypeError: ``seed`` not an int, ``device`` of the wrong type.
        ValueError: CUDA requested but not available; unknown ``profile``.
    """
    if profile is not None:
        check_profile(profile)
    seed_everything(seed)
    dev = resolve_device(device)
    configure_plotly()
    configure_matplotlib()
    if verbose:
        shown = profile or os.environ.get(PROFILE_ENV) or "unset"
        name = ""
        if dev.type == "cuda":
            name = f" ({torch.cuda.get_device_name(dev)})"
        print(f"mvbook: profile={shown} seed={seed} device={dev}{name} torch={torch.__version__}")
    return dev


def format_table(header, rows, digits: int = 1) -> tuple[str, str]:
    """A table as ``(plain text, HTML)``: ``header`` a list of column names, ``rows`` lists of
    cells (numbers are shown with ``digits`` decimals, NaN as an empty cell)."""
    import html
    import math

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v)

    header = [str(h) for h in header]
    body = [[cell(v) for v in row] for row in rows]
    if any(len(r) != len(header) for r in body):
        raise ValueError(f"every row must have {len(header)} cells like the header")
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h)
              for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w)
                       for i, (h, w) in enumerate(zip(header, widths)))]
    lines += ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(r, widths))) for r in body]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    trs = "".join("<tr>" + "".join(
        f'<td style="text-align:left">{html.escape(c)}</td>' if i == 0 else
        f'<td class="num" style="text-align:right">{html.escape(c)}</td>'
        for i, c in enumerate(r)) + "</tr>" for r in body)
    return "\n".join(lines), (f'<table class="mvbook-table"><thead><tr>{head}</tr></thead>'
                              f"<tbody>{trs}</tbody></table>")


def format_markdown(header, rows, digits: int = 1) -> str:
    """The table of :func:`format_table` as Markdown (numbers right-aligned)."""
    import math

    def cell(v) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.{digits}f}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(str(h) for h in header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def show_table(header, rows, *, title: str | None = None, digits: int = 1) -> None:
    """Display a table: rendered HTML in Jupyter (and in exported reports), text elsewhere.

    The HTML never wraps a cell: a table wider than the page scrolls sideways, so labels such
    as ``volumetric (softmax)`` and every number stay on one line. Use it for every table of
    more than a line or two (per action, per seed, ablations) instead of printed text.
    """
    from mvbook.results import wrap_table_html

    text, markup = format_table(header, rows, digits)
    markdown = format_markdown(header, rows, digits)
    markup = wrap_table_html(markup)
    if title:
        import html

        text = f"{title}\n{text}"
        markup = f"<p><b>{html.escape(title)}</b></p>{markup}"
        markdown = f"**{title}**\n\n{markdown}"
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:  # pragma: no cover - IPython is a dependency
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display({"text/plain": text, "text/html": markup, "text/markdown": markdown}, raw=True)
    else:
        print(text)
