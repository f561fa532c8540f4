"""What a report run is asked to do: its options, its configuration, each chapter's parameters.

A run's options travel in one place, :class:`ReportOptions` (built by :mod:`mvbook.report.cli`
from the command line, or directly by a caller). The chapters of a run are the
``NN_*.ipynb`` files of its notebooks folder (:func:`find_notebooks`), and each chapter's
parameters come from ``configs/<profile>.yaml`` (:func:`load_config`)::

    cell_timeout: 1800        # seconds per cell; null = no limit
    parameters:               # every chapter
      seed: 0
      device: auto
      data: studio
    notebooks:                # per chapter, by number ("10") or file stem
      "10":
        seed: 1

then ``-p key=value`` overrides (:func:`parse_overrides`, values parsed as YAML); ``profile``
is always passed (:func:`notebook_parameters`). ``--resume`` and ``--verify`` keep the
settings recorded in the run they re-enter (:meth:`ReportOptions.for_run`).

Nothing here executes a notebook or writes a file.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mvbook.runtime import DEVICE_FORMS, check_profile, parse_device

NOTEBOOK_PATTERN = re.compile(r"^(\d+)_.+\.ipynb$")


class ReportError(Exception):
    """A report cannot start: bad arguments, missing files, a folder that would be overwritten."""


def default_root() -> Path:
    """The folder that holds ``notebooks/`` and ``configs/``: the working directory when it
    has a ``notebooks`` folder, else the checkout that contains the ``mvbook`` package."""
    cwd = Path.cwd()
    if (cwd / "notebooks").is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]


@dataclass
class ReportOptions:
    """Everything a run needs; built by :mod:`mvbook.report.cli` from the command line.

    ``cell_timeout`` and ``progress_bar`` are requests: :meth:`resolved_cell_timeout` and
    :meth:`show_progress` turn them into what the run uses.
    """

    profile: str = "quick"
    notebooks_dir: Path = field(default_factory=lambda: default_root() / "notebooks")
    configs_dir: Path = field(default_factory=lambda: default_root() / "configs")
    reports_dir: Path = field(default_factory=lambda: default_root() / "reports")
    only: list[str] | None = None  # chapter numbers or file stems; None: every chapter
    out: Path | None = None  # the run folder to create; None: <reports_dir>/<UTC>-<profile>
    overrides: dict[str, Any] = field(default_factory=dict)  # -p key=value, every chapter
    cell_timeout: float | None = None  # seconds; None: from the config; 0: no limit
    kernel: str = "python3"
    html: bool = True  # export each executed chapter to HTML
    progress_bar: bool | None = None  # None: papermill's bar when stderr is a terminal

    def resolved_cell_timeout(self, config: Mapping[str, Any]) -> float | None:
        """Seconds per cell: this option, else the config's ``cell_timeout``; ``None`` for
        no limit (either of them 0 or null)."""
        timeout = self.cell_timeout if self.cell_timeout is not None else config.get("cell_timeout")
        return timeout or None

    def show_progress(self) -> bool:
        """Whether papermill shows its progress bar: as asked, else when stderr is a terminal."""
        return self.progress_bar if self.progress_bar is not None else sys.stderr.isatty()

    def for_run(self, env: Mapping[str, Any]) -> ReportOptions:
        """These options inside an existing run (``environment.json`` read as ``env``): the
        run's profile, kernel and notebooks folder replace this run's; the rest is kept."""
        return dataclasses.replace(
            self,
            profile=env.get("profile", self.profile),
            kernel=env.get("kernel") or self.kernel,
            notebooks_dir=Path(env.get("notebooks_dir") or self.notebooks_dir),
        )


def find_notebooks(
    notebooks_dir: str | os.PathLike[str], only: Iterable[str] | None = None
) -> list[Path]:
    """The chapters ``NN_*.ipynb`` of ``notebooks_dir`` in book order (by number, then name).

    ``only`` selects chapters by number (``"1"``, ``"01"``, ``"10"``) or file stem; a selector
    that matches nothing raises :class:`ReportError`.
    """
    folder = Path(notebooks_dir)
    if not folder.is_dir():
        raise ReportError(f"notebooks folder {folder} does not exist")
    found = []
    for path in folder.iterdir():
        match = NOTEBOOK_PATTERN.match(path.name)
        if match and path.is_file():
            found.append((int(match.group(1)), path.name, path))
    found.sort()
    notebooks = [p for _, _, p in found]
    if only is None:
        return notebooks
    wanted = [s.strip() for s in only if s.strip()]
    selected: list[Path] = []
    for sel in wanted:
        hits = [p for p in notebooks if _matches(p, sel)]
        if not hits:
            names = ", ".join(p.stem for p in notebooks) or "none"
            raise ReportError(f"--only {sel!r} matches no notebook in {folder} (have: {names})")
        selected.extend(h for h in hits if h not in selected)
    return [p for p in notebooks if p in selected]


def _matches(path: Path, selector: str) -> bool:
    number = NOTEBOOK_PATTERN.match(path.name).group(1)  # type: ignore[union-attr]
    if selector.isdigit():
        return int(selector) == int(number)
    return selector in (path.stem, path.name)


def load_config(profile: str, configs_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Read ``<configs_dir>/<profile>.yaml`` (see the module docstring); a missing file gives
    defaults (no cell timeout, no parameters besides ``profile``).

    The result has ``parameters`` and ``notebooks`` as mappings (empty when absent) and
    ``path``, the file read (``None`` for defaults). A malformed file raises
    :class:`ReportError` naming the file and key; an unknown profile raises ``ValueError``.
    """
    import yaml

    check_profile(profile)
    path = Path(configs_dir) / f"{profile}.yaml"
    config: dict[str, Any] = {}
    if path.exists():
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ReportError(f"{path}: expected a mapping at the top level")
        config = loaded
    unknown = set(config) - {"profile", "cell_timeout", "parameters", "notebooks", "description"}
    if unknown:
        raise ReportError(f"{path}: unknown keys {sorted(unknown)}")
    if config.get("profile", profile) != profile:
        raise ReportError(f"{path}: says profile {config['profile']!r}, expected {profile!r}")
    timeout = config.get("cell_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        raise ReportError(
            f"{path}: cell_timeout must be a positive number or null, got {timeout!r}"
        )
    for key in ("parameters", "notebooks"):
        value = config.get(key) or {}
        if not isinstance(value, dict):
            raise ReportError(f"{path}: {key} must be a mapping")
        config[key] = value
    for name, params in config["notebooks"].items():
        if not isinstance(params, dict):
            raise ReportError(f"{path}: notebooks.{name} must be a mapping of parameters")
    config["path"] = str(path) if path.exists() else None
    return config


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["seed=1", "device=cpu"]`` -> ``{"seed": 1, "device": "cpu"}`` (values read as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ReportError(f"-p expects key=value with a Python identifier as key, got {item!r}")
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, str) and parsed.strip():
            try:  # YAML 1.1 reads 1e-3 as a string
                parsed = float(parsed)
            except ValueError:
                pass
        out[key] = parsed
    return out


def notebook_parameters(
    path: Path, profile: str, config: Mapping[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Parameters of one chapter: global, then per-notebook (by number or stem), then ``-p``;
    ``profile`` always set.

    Configuration parameters and ``-p`` overrides that the chapter's ``parameters`` cell does
    not declare are left out (``data`` means nothing to a chapter without data); a ``-p`` name
    that no chapter declares is refused beforehand by :func:`check_overrides`. The result is
    exactly what the chapter receives (and what ``environment.json`` records)."""
    params: dict[str, Any] = dict(config.get("parameters") or {})
    number = NOTEBOOK_PATTERN.match(path.name).group(1)  # type: ignore[union-attr]
    per_nb = config.get("notebooks") or {}
    for key, values in per_nb.items():
        key = str(key)
        if (key.isdigit() and int(key) == int(number)) or key in (path.stem, path.name):
            params.update(values)
    declared = declared_parameters(path)
    params.update(overrides)
    if declared is not None:
        params = {k: v for k, v in params.items() if k in declared}
    params["profile"] = profile
    return params


def check_overrides(overrides: Mapping[str, Any], declared: Mapping[str, set[str] | None],
                    profile: str) -> None:
    """Refuse ``-p`` overrides before any chapter runs: a name that none of the chapters
    (``declared``: chapter -> its parameter names, ``None`` when unreadable) declares,
    ``profile`` other than the run's (use ``--profile``), or a ``device`` that is not one."""
    if "profile" in overrides and overrides["profile"] != profile:
        raise ReportError(f"-p profile={overrides['profile']} conflicts with the run's profile "
                          f"{profile!r}: choose the profile with --profile, not -p")
    if "device" in overrides:
        try:
            parse_device(overrides["device"], name="-p device")
        except (TypeError, ValueError):  # -p reads values as YAML: device=1 is an int
            raise ReportError(f"-p device={overrides['device']}: not a device "
                              f"(expected {DEVICE_FORMS})") from None
    if any(names is None for names in declared.values()):
        return  # a chapter whose parameters cannot be read may declare anything
    known = set().union(*declared.values()) if declared else set()
    unknown = sorted(set(overrides) - known - {"profile"})
    if unknown:
        listing = "; ".join(f"{name}: {', '.join(sorted(names)) or 'none'}"
                            for name, names in declared.items())
        raise ReportError(f"-p {', '.join(unknown)}: not a parameter of any chapter of this run "
                          f"(declared parameters: {listing})")


def declared_parameters(path: Path) -> set[str] | None:
    """Names assigned in the notebook's cell tagged ``parameters`` (``None`` if unreadable)."""
    import ast

    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        tree = ast.parse(cell.source)
    except Exception:  # a broken notebook is reported when it runs, not here
        return None
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Name):
                names.add(target.id)
    return names


__all__ = [
    "NOTEBOOK_PATTERN",
    "ReportError",
    "ReportOptions",
    "check_overrides",
    "declared_parameters",
    "default_root",
    "find_notebooks",
    "load_config",
    "notebook_parameters",
    "parse_overrides",
]
