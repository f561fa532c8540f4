"""Weights and cards of zoo models on disk: where they live, how they are written and checked.

A trained model is two files in one folder: ``<name>.pt`` (the network's state dict, floating
point tensors stored in half precision, loaded with ``torch.load(weights_only=True)``) and
``<name>.json``, its card (recipe hash, data hash, code commit, device, training time, steps,
held-out metrics and the sha256 of the weights). The ``quick`` weights ship inside the package
(:data:`SHIPPED`); other sizes live in the cache (``$MVBOOK_CACHE/zoo/<profile>/``).

Loading never trains and never guesses: a missing file, a weights file whose sha256 differs
from its card, a card that is not valid JSON, or a card whose recipe hash differs from the
recipe in the code each raise :class:`ZooError` with the command that rebuilds the model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from mvbook.runtime import check_profile
from mvbook.studio.build import cache_root

__all__ = ["SHIPPED", "ZooError", "default_folder", "weights_path", "card_path", "sha256",
           "write_model", "read_card", "load_state"]

#: Folder of the shipped (``quick``) weights and cards, inside the package.
SHIPPED = Path(__file__).with_name("weights")


class ZooError(RuntimeError):
    """A zoo model cannot be loaded as it is (missing, corrupted or out of date)."""


def default_folder(profile: str = "quick", cache_dir: str | os.PathLike | None = None) -> Path:
    """Where models of a size live: the package for ``quick``, else ``<cache>/zoo/<profile>``."""
    check_profile(profile)
    if profile == "quick":
        return SHIPPED
    return cache_root(cache_dir) / "zoo" / profile


def weights_path(name: str, folder: str | os.PathLike) -> Path:
    return Path(folder) / f"{name}.pt"


def card_path(name: str, folder: str | os.PathLike) -> Path:
    return Path(folder) / f"{name}.json"


def rebuild_hint(name: str, profile: str, folder: Path) -> str:
    # the shipped folder is named explicitly: `zoo train` writes to the cache by default
    out = "" if folder == default_folder(profile) != SHIPPED else f" --out {folder}"
    return f"rebuild it with `mvbook zoo train {name} --profile {profile}{out} --overwrite`"


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def half_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict with floating point tensors in half precision (what is shipped)."""
    return {k: (v.detach().cpu().half() if v.is_floating_point() else v.detach().cpu())
            for k, v in model.state_dict().items()}


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file, not mkstemp's private 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_model(name: str, folder: str | os.PathLike, state: dict[str, torch.Tensor],
                card: dict[str, Any], *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<name>.pt`` and ``<name>.json`` (the card gains ``weights_sha256`` and
    ``weights_bytes``); refuses to replace existing files unless ``overwrite``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wpath, cpath = weights_path(name, folder), card_path(name, folder)
    existing = [str(p) for p in (wpath, cpath) if p.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing} exist; pass overwrite=True (--overwrite) to replace them")
    _atomic_write(wpath, lambda fh: torch.save(state, fh))
    card = dict(card, weights_sha256=sha256(wpath), weights_bytes=wpath.stat().st_size)
    text = json.dumps(card, indent=2, sort_keys=False) + "\n"
    _atomic_write(cpath, lambda fh: fh.write(text.encode()))
    return wpath, cpath


def read_card(name: str, folder: str | os.PathLike, profile: str = "quick", *,
              hint: str | None = None) -> dict[str, Any]:
    """The card of a model; :class:`ZooError` if it is missing or not a JSON object. ``hint``:
    how to rebuild the model (default: the ``mvbook zoo train`` command)."""
    folder = Path(folder)
    path = card_path(name, folder)
    hint = rebuild_hint(name, profile, folder) if hint is None else hint
    if not path.is_file():
        raise ZooError(f"zoo model {name!r} ({profile}) has no card at {path}; " + hint)
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ZooError(f"the card {path} is not valid JSON ({err}); " + hint) from None
    if not isinstance(card, dict) or "weights_sha256" not in card or "recipe" not in card:
        raise ZooError(f"the card {path} lacks 'recipe' or 'weights_sha256'; " + hint)
    return card


def load_state(name: str, folder: str | os.PathLike, recipe_digest: str,
               profile: str = "quick", *, hint: str | None = None,
               ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Checked weights and card: the sha256 matches the card, the card matches the recipe.

    Returns the state dict (float32) and the card. ``hint``: how to rebuild the model, ending
    every error message (default: the ``mvbook zoo train`` command).
    """
    folder = Path(folder)
    hint = rebuild_hint(name, profile, folder) if hint is None else hint
    card = read_card(name, folder, profile, hint=hint)
    wpath = weights_path(name, folder)
    if not wpath.is_file():
        raise ZooError(f"zoo model {name!r} ({profile}) has a card but no weights at {wpath}; "
                       + hint)
    if card["recipe"] != recipe_digest:
        raise ZooError(f"the weights {wpath} were trained with recipe {card['recipe']}, but the "
                       f"code's recipe of {name!r} ({profile}) is now {recipe_digest}: the recipe "
                       f"changed since they were trained; " + hint)
    digest = sha256(wpath)
    if digest != card["weights_sha256"]:
        raise ZooError(f"the weights {wpath} are corrupted: sha256 {digest[:12]}... differs from "
                       f"the card's {str(card['weights_sha256'])[:12]}...; " + hint)
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as err:  # a file that hashes right but does not unpickle
        raise ZooError(f"the weights {wpath} cannot be read ({err}); " + hint) from None
    if not isinstance(state, dict):
        raise ZooError(f"the weights {wpath} hold a {type(state).__name__}, not a state dict; "
                       + hint)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}, card
