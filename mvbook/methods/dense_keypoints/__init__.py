"""Semi-supervised dense keypoints with a probabilistic epipolar constraint (Yu et al. 2021).

A dense keypoint network ``phi`` maps every foreground pixel of a person crop to a point of the
body surface (part I and the UV of that part, like DensePose). It starts from ``phi_0``, trained
with labels on another domain (the zoo ``dense0``), and learns from **unlabelled calibrated
view pairs** of the target domain with the probabilistic epipolar error of eqs. 3-8 and 17: every
pixel x of one view is matched softly to the pixels x' of the other view by the similarity of
their surface coordinates (the matchability, eq. 4), and the epipolar distances d(x, x') are
averaged under that matchability (eq. 6), over the pixels visible in both views (eq. 8), both
ways (eq. 7). A distillation term L_R keeps ``phi`` near ``phi_0`` (eq. 13) and a photometric
term L_T compares colours under the same matchability (eq. 14).

The method contract (:mod:`mvbook.methods`): :class:`Config`, :func:`settings`, :data:`LOSSES`
(config.py), :func:`prepare`, :class:`ViewSet`, :class:`PairBatches` (data.py),
:class:`DenseNet` (model.py; the zoo ``dense0`` with its encoder frozen), the losses and
:func:`make_loss` (losses.py; L_M and L_T through :mod:`mvbook.dense`), :func:`fit` and
:func:`main` (training.py), :func:`predict` and :func:`evaluate` (evaluation.py).
"""

from .config import COORDINATES, LOSSES, NORMALIZE, TERMS, Config, Settings, loss_terms, settings
from .data import (
    KEYS,
    LabelledSet,
    PairBatches,
    Splits,
    ViewSet,
    encode_views,
    labelled_set,
    prepare,
    source_domain,
)
from .evaluation import MATCH_TOLERANCE, epipolar_nn_error, evaluate, predict, view_pairs
from .losses import (
    distillation_loss,
    epipolar_loss,
    labelled_loss,
    make_loss,
    pair_pixels,
    photometric_loss,
)
from .model import DenseNet, canonical_points, field_pixels, foreground_pixels
from .training import fit, initial_net, main

__all__ = [
    "COORDINATES", "LOSSES", "NORMALIZE", "TERMS", "Config", "Settings", "loss_terms", "settings",
    "KEYS", "LabelledSet", "PairBatches", "Splits", "ViewSet", "encode_views", "labelled_set",
    "prepare", "source_domain",
    "DenseNet", "canonical_points", "field_pixels", "foreground_pixels",
    "distillation_loss", "epipolar_loss", "labelled_loss", "make_loss", "pair_pixels",
    "photometric_loss",
    "fit", "initial_net", "main",
    "MATCH_TOLERANCE", "epipolar_nn_error", "evaluate", "predict", "view_pairs",
]
