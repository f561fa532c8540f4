"""The model zoo: pretrained studio networks that the chapters start from.

Every paper of the book starts from a pretrained network (a COCO/MPII 2D pose net, ImageNet
features, a DensePose model). The book's stand-ins are trained on the studio's *training*
subjects only, by the project's own code, from named recipes (:mod:`mvbook.zoo.recipes`):

- ``pose2d``: a 2D human joint detector (:mod:`mvbook.zoo.pose2d`): chapter 10's pretrained
  backbone, chapter 11's 2D-labelled pretraining, SelfPose3d's pseudo-2D source.
- ``dense0``: dense surface coordinates, parts + UV (:mod:`mvbook.zoo.dense`), trained on a
  shifted studio domain: the dense-keypoint chapter's ``phi_0``.
- ``trunk``: general image features, the encoder of a parts + UV network trained on other looks
  and rooms of the training subjects (:meth:`mvbook.nn.SimpleBaseline.stage_features` reads its
  maps at every scale): the stand-in for an ImageNet-pretrained ResNet (MCSS's trunk, the
  keypoint-discovery chapter's perceptual features).

The ``quick`` weights ship with the package, with a card each (:mod:`mvbook.zoo.store`);
:func:`load` checks them (sha256, recipe hash) and never trains. ``mvbook zoo list``,
``mvbook zoo train NAME`` and ``mvbook zoo verify [NAME]`` are the commands.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from .recipes import MODELS, Recipe, check_no_test_data, recipe
from .store import SHIPPED, ZooError, default_folder, load_state, read_card
from .tasks import task
from .training import held_out_bank, train_model

__all__ = ["MODELS", "Recipe", "SHIPPED", "ZooError", "card", "check_no_test_data", "load",
           "recipe", "train_model", "verify"]

#: How far a re-measured held-out metric may be from its card (absolute, in the metric's
#: unit): the studio renders the same images on every machine up to floating-point rounding,
#: which can flip a ray that grazes a silhouette (measured: 2 of 134,208 foreground pixels of
#: the trunk's held-out sample differ between two x86-64 machines), so foreground pixel counts
#: get a small slack.
TOLERANCE = {"error px": 0.03, "median px": 0.03, "PCK@2px": 0.5, "PCK@5px": 0.5,
             "left/right swaps": 0.3, "crops": 0.0,
             "part accuracy": 0.5, "foreground IoU": 0.5, "UV error": 0.003, "pixels": 20.0}


def _folder(profile: str, folder: str | os.PathLike | None, cache_dir) -> Path:
    return Path(folder) if folder is not None else default_folder(profile, cache_dir)


def card(name: str, profile: str = "quick", *, folder: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The card of a trained zoo model (:class:`ZooError` if there is none)."""
    recipe(name, profile)  # validates the name
    return read_card(name, _folder(profile, folder, cache_dir), profile)


def load(name: str, profile: str = "quick", *, folder: str | os.PathLike | None = None,
         cache_dir: str | os.PathLike | None = None) -> nn.Module:
    """The pretrained network ``name`` at size ``profile``, in eval mode on the CPU.

    ``quick`` weights ship with the package; ``full`` (and ``smoke``) weights are read from
    ``<cache>/zoo/<profile>/`` (or ``folder``), where ``mvbook zoo train NAME --profile full``
    puts them. Raises :class:`ZooError` (with the command that rebuilds the model) when the
    files are missing, corrupted or trained with another recipe.
    """
    rec = recipe(name, profile)
    state, _ = load_state(name, _folder(profile, folder, cache_dir), rec.digest(), profile)
    model = task(name).build_model(rec)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ZooError(f"the weights of {name!r} ({profile}) do not fit the recipe's network: "
                       f"{err}") from None
    return model.eval()


def verify(name: str, profile: str = "quick", *, folder: str | os.PathLike | None = None,
           cache_dir: str | os.PathLike | None = None, progress: bool = False
           ) -> dict[str, tuple[float, float]]:
    """Load a model and re-measure its card's held-out metrics on the card's studio sample.

    Returns ``{metric: (card value, measured value)}``; raises :class:`ZooError` when loading
    fails or a metric is off by more than :data:`TOLERANCE`.
    """
    model = load(name, profile, folder=folder, cache_dir=cache_dir)
    info = card(name, profile, folder=folder, cache_dir=cache_dir)
    rec = recipe(name, profile)
    measured = task(name).evaluate(model, held_out_bank(rec, progress=progress, cache_dir=cache_dir))
    expected = info["held_out"]["metrics"]
    out = {k: (float(expected[k]), float(measured[k])) for k in expected}
    bad = {k: v for k, v in out.items() if abs(v[0] - v[1]) > TOLERANCE.get(k, 0.0)}
    if bad:
        raise ZooError(f"zoo model {name!r} ({profile}) does not reproduce its card: "
                       + ", ".join(f"{k} card {a:.3f} measured {b:.3f}" for k, (a, b) in bad.items()))
    return out
