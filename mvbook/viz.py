"""Pictures: 2D skeleton overlays, 3D skeletons and camera rigs, image grids.

Three kinds of figure, one vocabulary for every chapter:

- :func:`draw_skeleton_2d` draws a skeleton over a matplotlib image axis (``(J, 2)`` or
  ``(P, J, 2)`` joints in pixels), bones coloured by side (:data:`SIDE_COLORS`), hidden joints
  marked; :func:`image_grid` shows a batch of views ``(N, 3, H, W)`` / ``(N, H, W, 3)`` with
  optional overlays.
- :func:`skeleton_traces` and :func:`camera_traces` build plotly ``Scatter3d`` traces of 3D
  poses (``(J, 3)`` or ``(P, J, 3)`` mm) and of camera rigs (a frustum per camera from
  ``K, R, t`` or a :class:`mvbook.geometry.Camera`); :func:`scene_figure` puts them in one
  figure and :func:`fit_scene` sets the axis ranges from *everything drawn* (every joint of every
  pose, every camera centre and frustum corner, the floor) plus a margin, with one scale on all
  three axes, so that nothing is clipped and nothing is stretched.

Conventions (DESIGN.md): world units mm, world ``z`` up; ``x_cam = R X + t``; pixel ``(u, v)``
with ``(0, 0)`` the centre of the top-left pixel, ``u`` right, ``v`` down. That is also
matplotlib's ``imshow`` convention (pixel ``(i, j)`` covers ``[i - 0.5, i + 0.5]``), so joints in
pixels are drawn over an ``imshow`` of the image without any shift. Inputs may be numpy arrays,
torch tensors (any device; they are detached and copied to the CPU) or nested lists. Line
segments are built with numpy indexing over all bones (and persons, and cameras) at once, and
separated by ``None`` for plotly.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import plotly.graph_objects as go
import torch
from matplotlib.colors import to_rgba

from mvbook.geometry import Camera
from mvbook.skeletons import Skeleton, get_skeleton

__all__ = [
    "PALETTE",
    "SIDE_COLORS",
    "bone_segments",
    "camera_traces",
    "draw_skeleton_2d",
    "fit_scene",
    "floor_traces",
    "frustum_corners",
    "image_grid",
    "scene_figure",
    "skeleton_traces",
]

#: Colours of the left, right and central bones and joints (matplotlib and plotly).
SIDE_COLORS: dict[str, str] = {"left": "#1f77b4", "right": "#d62728", "center": "#2ca02c"}
#: Categorical colours (matplotlib's ``C0, C1, ...``): cameras ``0, 1, ...`` by default, and any
#: set of poses or methods drawn side by side.
PALETTE: tuple[str, ...] = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
)


# ----------------------------------------------------------------------------------- inputs
def _numpy(value: Any, name: str, dtype: Any = np.float64) -> np.ndarray:
    """``value`` (numpy, torch on any device, nested lists) as a numpy array of ``dtype``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        if value.dtype == torch.bfloat16:
            value = value.float()
        value = value.numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array of numbers, got {type(value).__name__}") from err


def _joints(value: Any, name: str, skeleton: Skeleton, dim: int) -> np.ndarray:
    """Joints ``(J, dim)`` or ``(P, J, dim)`` as a float ``(P, J, dim)`` array."""
    arr = _numpy(value, name)
    J = skeleton.num_joints
    if arr.ndim not in (2, 3) or arr.shape[-2:] != (J, dim):
        raise ValueError(
            f"{name} must have shape ({J}, {dim}) or (P, {J}, {dim}) for skeleton "
            f"{skeleton.name!r}, got {tuple(arr.shape)}"
        )
    return arr.reshape(-1, J, dim)


def _bones(skeleton: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """``(B, 2)`` bone joint indices and ``(B,)`` bone sides (``"left"``, ``"right"``, ``"center"``).

    A bone takes the side of its child joint, or of its parent when the child is central.
    """
    bones = np.asarray(skeleton.bones, dtype=np.int64).reshape(-1, 2)
    sides = np.asarray(skeleton.sides, dtype=object)
    child, parent = sides[bones[:, 1]], sides[bones[:, 0]]
    return bones, np.where(child == "center", parent, child)


def bone_segments(joints: Any, skeleton: str | Skeleton = "h36m17") -> np.ndarray:
    """Bone end points ``(..., B, 2, D)`` of joints ``(..., J, D)`` (any units), bones in skeleton order."""
    skel = get_skeleton(skeleton)
    arr = _numpy(joints, "joints")
    if arr.ndim < 2 or arr.shape[-2] != skel.num_joints:
        raise ValueError(
            f"joints must have shape (..., {skel.num_joints}, D) for skeleton {skel.name!r}, "
            f"got {tuple(arr.shape)}"
        )
    return arr[..., _bones(skel)[0], :]


def _none_separated(segments: np.ndarray) -> tuple[list, list, list]:
    """Polylines ``(N, L, 3)`` -> plotly ``x, y, z`` lists with ``None`` after each polyline.

    Polylines with a non-finite point are left out.
    """
    seg = segments[np.isfinite(segments).all(axis=(-2, -1))]
    if len(seg) == 0:
        return [], [], []
    gap = np.full((len(seg), 1, 3), np.nan)
    flat = np.concatenate([seg, gap], axis=1).reshape(-1, 3).astype(object)
    flat[np.isnan(flat.astype(float))] = None
    return flat[:, 0].tolist(), flat[:, 1].tolist(), flat[:, 2].tolist()


# --------------------------------------------------------------------------------------- 2D
def draw_skeleton_2d(
    ax: plt.Axes,
    joints2d: Any,
    skeleton: str | Skeleton = "h36m17",
    visibility: Any | None = None,
    *,
    color: str | None = None,
    joint_color: Any | None = None,
    linewidth: float = 2.0,
    markersize: float = 12.0,
    show_hidden: bool = True,
    hidden_color: str = "red",
    label: str | None = None,
    image_size: Sequence[int] | None = None,
    alpha: float = 1.0,
) -> list:
    """Draw 2D skeletons on a matplotlib axis; returns one ``Line2D`` per drawn bone.

    Args:
        ax: the axis (typically showing the image with ``imshow``).
        joints2d: ``(J, 2)`` or ``(P, J, 2)`` pixels ``(u, v)``, ``(0, 0)`` the centre of the
            top-left pixel. Bones with a non-finite end are not drawn.
        skeleton: a :class:`mvbook.skeletons.Skeleton` or its name.
        visibility: ``(J,)`` or ``(P, J)`` bool, or ``None`` (all visible). A bone is visible
            when both of its joints are; other bones are drawn dashed and thinner (or left out
            with ``show_hidden=False``); hidden joints are marked with an ``x`` in
            ``hidden_color``.
        color: one colour for every bone; default: left, right and central bones in
            :data:`SIDE_COLORS`.
        joint_color: one colour or ``(J,)`` colours for the visible joints; default the bones'
            colour scheme (the side of each joint, or ``color``).
        linewidth, markersize: bone width in points, joint marker area in points^2.
        label: legend label, given to the first bone drawn.
        image_size: ``(width, height)``: also draw the image border and set the axis to the
            image (``u`` right, ``v`` down, equal aspect); useful without an image. Over an image
            (an axis with an ``imshow``) the view is kept as it was: joints outside the image
            do not widen it.
        alpha: opacity of everything drawn.

    Returns:
        The bones' ``Line2D`` artists in skeleton order (person by person), one per drawn bone.
    """
    skel = get_skeleton(skeleton)
    uv = _joints(joints2d, "joints2d", skel, 2)                                   # (P, J, 2)
    P, J = uv.shape[:2]
    if visibility is None:
        vis = np.ones((P, J), bool)
    else:
        vis = _numpy(visibility, "visibility", dtype=bool)
        if vis.shape not in ((J,), (P, J)):
            raise ValueError(
                f"visibility must have shape ({J},) or ({P}, {J}) like joints2d, got {tuple(vis.shape)}"
            )
        vis = np.broadcast_to(vis.reshape(-1, J), (P, J))
    view = (ax.get_xlim(), ax.get_ylim()) if ax.images else None    # over an image: keep its view
    bones, bone_sides = _bones(skel)
    seg = uv[:, bones]                                                            # (P, B, 2, 2)
    finite = np.isfinite(seg).all(axis=(-2, -1))                                  # (P, B)
    seen = vis[:, bones].all(-1)                                                  # (P, B)
    sides = np.broadcast_to(bone_sides, finite.shape)
    order = np.arange(finite.size).reshape(finite.shape)                          # skeleton order
    drawn: list[tuple[int, Any]] = []
    groups = [(s, v) for s in ("left", "right", "center") for v in (True, False)]
    for side, visible in groups:
        if not visible and not show_hidden:
            continue
        sel = finite & (seen == visible) & (sides == side)
        if not sel.any():
            continue
        pts = seg[sel]                                                            # (n, 2, 2)
        lines = ax.plot(
            pts[:, :, 0].T, pts[:, :, 1].T,
            color=color or SIDE_COLORS[side],
            linewidth=linewidth if visible else 0.6 * linewidth,
            linestyle="-" if visible else "--",
            alpha=alpha if visible else 0.6 * alpha,
            solid_capstyle="round",
        )
        drawn += list(zip(order[sel].tolist(), lines))
    drawn.sort(key=lambda item: item[0])
    artists = [line for _, line in drawn]
    if label is not None and artists:
        artists[0].set_label(label)
    # joints: visible ones coloured, hidden ones crossed
    ok = np.isfinite(uv).all(-1)
    if joint_color is None:
        jc = _rgba([color or SIDE_COLORS[side] for side in skel.sides])
    elif isinstance(joint_color, str) or (
            np.ndim(joint_color) == 1 and len(joint_color) in (3, 4)
            and all(isinstance(v, (int, float, np.number)) for v in joint_color)):
        jc = _rgba([joint_color] * J)
    else:
        if len(joint_color) != J:
            raise ValueError(f"joint_color must be one colour or {J} colours, got {len(joint_color)}")
        jc = _rgba(list(joint_color))
    jc = np.broadcast_to(jc, (P, J, 4))
    shown = ok & vis
    if shown.any():
        ax.scatter(uv[shown][:, 0], uv[shown][:, 1], s=markersize, c=jc[shown], zorder=3,
                   alpha=alpha, linewidths=0)
    hidden = ok & ~vis
    if hidden.any() and show_hidden:
        ax.scatter(uv[hidden][:, 0], uv[hidden][:, 1], s=1.5 * markersize, c=hidden_color,
                   marker="x", zorder=3, alpha=alpha, linewidths=1.0)
    if view is not None:
        ax.set_xlim(*view[0])
        ax.set_ylim(*view[1])
    if image_size is not None:
        w, h = (float(v) for v in image_size)
        ax.add_patch(plt.Rectangle((-0.5, -0.5), w, h, fill=False, color="gray", lw=1.0))
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)                                                # v grows down
        ax.set_aspect("equal")
        ax.grid(False)
    return artists


def _rgba(colors: Sequence[Any]) -> np.ndarray:
    """``(n, 4)`` RGBA rows of matplotlib colours."""
    return np.asarray([to_rgba(c) for c in colors], dtype=np.float64).reshape(-1, 4)


def _image_layout(arr: np.ndarray, name: str) -> np.ndarray:
    """Images in any accepted layout -> ``(N, H, W, 3)`` or ``(N, H, W)``."""
    shape = tuple(arr.shape)
    msg = (f"{name} must have shape (N, 3, H, W), (N, H, W, 3), (N, 1, H, W), (N, H, W, 1) or "
           f"(N, H, W), got {shape}")
    if arr.ndim == 3:
        if shape[-1] == 3:
            raise ValueError(f"{name} of shape {shape} looks like one (H, W, 3) image: give a batch "
                             f"(1, H, W, 3); single-channel maps are (N, H, W)")
        return arr
    if arr.ndim != 4:
        raise ValueError(msg)
    if shape[-1] in (3, 1):                                                       # channels last
        return arr[..., 0] if shape[-1] == 1 else arr
    if shape[1] in (3, 1):                                                        # channels first
        return arr[:, 0] if shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    raise ValueError(msg)


def image_grid(
    images: Any,
    titles: Sequence[str] | None = None,
    *,
    ncols: int | None = None,
    panel_size: float = 2.4,
    axes: Any | None = None,
    cmap: str | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    interpolation: str | None = None,
    joints2d: Any | None = None,
    visibility: Any | None = None,
    skeleton: str | Skeleton = "h36m17",
    skeleton_kw: Mapping[str, Any] | None = None,
    suptitle: str | None = None,
) -> tuple[plt.Figure, np.ndarray]:
    """Show ``N`` images side by side (rows of ``ncols``), optionally with 2D skeletons.

    Args:
        images: ``(N, 3, H, W)`` or ``(N, H, W, 3)`` RGB, uint8 (0-255) or float (0-1, clipped),
            or single-channel ``(N, H, W)`` / ``(N, 1, H, W)`` / ``(N, H, W, 1)`` maps (masks,
            depth; shown with ``cmap``, NaN as background). Pixel ``(0, 0)``'s centre is at axis
            coordinates ``(0, 0)``.
        titles: ``N`` panel titles or ``None``.
        ncols: panels per row (default ``min(N, 6)``).
        panel_size: inches per panel side.
        axes: draw into these ``N`` (or more) existing axes instead of a new figure.
        cmap, vmin, vmax, interpolation: passed to ``imshow``.
        joints2d: ``(N, J, 2)`` or ``(N, P, J, 2)`` pixels to draw on each panel with
            :func:`draw_skeleton_2d` (``visibility`` ``(N, J)`` / ``(N, P, J)``; ``skeleton_kw``
            more arguments).
        suptitle: a title over the whole figure.

    Returns:
        ``(figure, axes)``, ``axes`` a 1-D array of the ``N`` panels (unused grid cells are hidden).
    """
    raw = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if raw.dtype == object or not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise TypeError(f"images must be a numeric array, got dtype {raw.dtype}")
    arr = _image_layout(raw, "images")
    n = arr.shape[0]
    if n == 0:
        raise ValueError("images must hold at least one image (N >= 1), got N = 0")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must have one entry per image ({n}), got {len(titles)}")
    if arr.ndim == 4:
        if arr.dtype == bool:
            arr = arr.astype(np.float64)
        elif not np.issubdtype(arr.dtype, np.integer):
            arr = np.clip(arr.astype(np.float64), 0.0, 1.0)
        elif arr.dtype != np.uint8:
            arr = np.clip(arr, 0, 255).astype(np.uint8)
    elif arr.dtype == bool:
        arr = arr.astype(np.float64)
    if axes is None:
        ncols = int(ncols or min(n, 6))
        if ncols < 1:
            raise ValueError(f"ncols must be >= 1, got {ncols}")
        nrows = -(-n // ncols)
        h, w = arr.shape[1:3]
        aspect = h / w
        fig, grid = plt.subplots(nrows, ncols, squeeze=False,
                                 figsize=(panel_size * ncols, panel_size * aspect * nrows + 0.3))
        flat = grid.reshape(-1)
        for ax in flat[n:]:
            ax.set_visible(False)
        panels = flat[:n]
    else:
        panels = np.asarray(axes, dtype=object).reshape(-1)
        if len(panels) < n:
            raise ValueError(f"axes must hold at least one axis per image ({n}), got {len(panels)}")
        panels = panels[:n]
        fig = panels[0].figure
    j2d = None if joints2d is None else _numpy(joints2d, "joints2d")
    if j2d is not None and (j2d.ndim not in (3, 4) or j2d.shape[0] != n):
        raise ValueError(f"joints2d must have shape (N, J, 2) or (N, P, J, 2) with N = {n}, "
                         f"got {tuple(j2d.shape)}")
    vis = None if visibility is None else _numpy(visibility, "visibility", dtype=bool)
    for i, ax in enumerate(panels):
        ax.imshow(arr[i], cmap=cmap, vmin=vmin, vmax=vmax, interpolation=interpolation)
        if j2d is not None:
            draw_skeleton_2d(ax, j2d[i], skeleton, None if vis is None else vis[i],
                             **dict(skeleton_kw or {}))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
        ax.grid(False)
        ax.set_xticks([])
        ax.set_yticks([])
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig, np.asarray(panels, dtype=object)


# --------------------------------------------------------------------------------------- 3D
def _camera_arrays(
    cameras: Camera | None, K: Any, R: Any, t: Any, image_size: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``K (C, 3, 3), R (C, 3, 3), t (C, 3), size (C, 2)`` from a Camera or arrays."""
    if cameras is not None:
        if not isinstance(cameras, Camera):
            raise TypeError(f"cameras must be a mvbook.geometry.Camera, got {type(cameras).__name__}")
        if len(cameras.batch_shape) > 1:
            raise ValueError(f"cameras must have batch shape () or (C,), got {tuple(cameras.batch_shape)}")
        K, R, t = cameras.K, cameras.R, cameras.t
        if image_size is None and cameras.image_size is not None:
            image_size = cameras.image_size
    elif K is None or R is None or t is None:
        raise ValueError("give either cameras (a Camera) or all of K, R and t")
    Kn, Rn, tn = _numpy(K, "K"), _numpy(R, "R"), _numpy(t, "t")
    if Kn.shape[-2:] != (3, 3) or Kn.ndim not in (2, 3):
        raise ValueError(f"K must have shape (3, 3) or (C, 3, 3), got {tuple(Kn.shape)}")
    if Rn.shape[-2:] != (3, 3) or Rn.ndim not in (2, 3):
        raise ValueError(f"R must have shape (3, 3) or (C, 3, 3), got {tuple(Rn.shape)}")
    if tn.shape[-1:] != (3,) or tn.ndim not in (1, 2):
        raise ValueError(f"t must have shape (3,) or (C, 3), got {tuple(tn.shape)}")
    C = max(Kn.reshape(-1, 3, 3).shape[0], Rn.reshape(-1, 3, 3).shape[0], tn.reshape(-1, 3).shape[0])
    try:
        Kn = np.broadcast_to(Kn.reshape(-1, 3, 3), (C, 3, 3))
        Rn = np.broadcast_to(Rn.reshape(-1, 3, 3), (C, 3, 3))
        tn = np.broadcast_to(tn.reshape(-1, 3), (C, 3))
    except ValueError as err:
        raise ValueError(f"K, R and t must describe the same number of cameras, got shapes "
                         f"{tuple(Kn.shape)}, {tuple(Rn.shape)}, {tuple(tn.shape)}") from err
    if image_size is None:                                  # principal point at the image centre
        size = np.stack([2 * Kn[:, 0, 2] + 1, 2 * Kn[:, 1, 2] + 1], -1)
    else:
        size = _numpy(image_size, "image_size")
        if size.shape[-1:] != (2,):
            raise ValueError(f"image_size must be (width, height) or (C, 2), got {tuple(size.shape)}")
        size = np.broadcast_to(size.reshape(-1, 2), (C, 2))
    return Kn, Rn, tn, size


def frustum_corners(
    cameras: Camera | None = None,
    depth: Any = 1000.0,
    *,
    K: Any | None = None,
    R: Any | None = None,
    t: Any | None = None,
    image_size: Any | None = None,
) -> np.ndarray:
    """World positions ``(C, 4, 3)`` mm of the image corners at ``depth`` mm in front of each camera.

    The corners are the pixel *edges* ``(-0.5, -0.5), (W - 0.5, -0.5), (W - 0.5, H - 0.5),
    (-0.5, H - 0.5)`` (top-left, top-right, bottom-right, bottom-left), back-projected through the
    undistorted pinhole: ``X = R^T (depth K^-1 (u, v, 1) - t)``. Cameras: a
    :class:`~mvbook.geometry.Camera` of batch ``()`` or ``(C,)``, or ``K (C, 3, 3)``,
    ``R (C, 3, 3)``, ``t (C, 3)``; ``image_size`` ``(width, height)`` defaults to the camera's,
    else to twice the principal point plus one. ``depth``: a number or ``(C,)``.
    """
    Kn, Rn, tn, size = _camera_arrays(cameras, K, R, t, image_size)
    C = len(Kn)
    w, h = size[:, 0], size[:, 1]
    edge = np.full(C, -0.5)
    u = np.stack([edge, w - 0.5, w - 0.5, edge], 1)                               # (C, 4)
    v = np.stack([edge, edge, h - 0.5, h - 0.5], 1)
    homo = np.stack([u, v, np.ones_like(u)], -1)                                  # (C, 4, 3)
    d = np.broadcast_to(_numpy(depth, "depth"), (C,))
    Xc = d[:, None, None] * np.einsum("cij,ckj->cki", np.linalg.inv(Kn), homo)
    return np.einsum("cji,ckj->cki", Rn, Xc - tn[:, None, :])                    # R^T (Xc - t)


def camera_traces(
    cameras: Camera | None = None,
    *,
    K: Any | None = None,
    R: Any | None = None,
    t: Any | None = None,
    image_size: Any | None = None,
    depth: float | None = None,
    names: Sequence[str] | None = None,
    colors: Sequence[str] | str | None = None,
    axes: bool = False,
    axis_length: float | None = None,
    labels: bool = True,
    width: float = 3.0,
    scene: str | None = None,
) -> list[go.Scatter3d]:
    """Plotly traces of camera frusta: one per camera, plus the centres (and optional axes).

    Args:
        cameras: a :class:`~mvbook.geometry.Camera` of batch ``()`` or ``(C,)``; or give
            ``K (C, 3, 3)`` px, ``R (C, 3, 3)``, ``t (C, 3)`` mm (``x_cam = R X + t``).
        image_size: ``(width, height)`` or ``(C, 2)`` px, default the camera's (or twice the
            principal point plus one).
        depth: frustum depth in mm; default a fifth of the mean distance of the centres from
            their centroid (500 mm for a single camera).
        names: ``C`` camera names (legend, labels), default ``"camera c"``.
        colors: one colour or ``C`` colours, default :data:`PALETTE`.
        axes: also draw each camera's ``x`` (red, image right), ``y`` (green, image down) and
            ``z`` (blue, viewing direction) axes, ``axis_length`` mm long (default ``depth / 2``).
        labels: write the names next to the centres.
        scene: plotly scene id (``"scene2"``, ...) for subplots; default the first scene.

    Each frustum is the pyramid from the centre ``-R^T t`` to the four image corners at ``depth``
    (:func:`frustum_corners`), with a small triangle over the top edge marking the image's up.
    """
    Kn, Rn, tn, size = _camera_arrays(cameras, K, R, t, image_size)
    C = len(Kn)
    centres = -np.einsum("cji,cj->ci", Rn, tn)                                    # -R^T t
    if depth is None:
        spread = np.linalg.norm(centres - centres.mean(0), axis=-1).mean() if C > 1 else 0.0
        depth = 0.2 * spread if spread > 0 else 500.0
    corners = frustum_corners(K=Kn, R=Rn, t=tn, image_size=size, depth=depth)     # (C, 4, 3)
    top = corners[:, 1] - corners[:, 0]
    up = corners[:, 0] - corners[:, 3]
    tri = np.stack([corners[:, 0] + 0.3 * top, corners[:, 0] + 0.5 * top + 0.2 * up,
                    corners[:, 0] + 0.7 * top], 1)                                # (C, 3, 3)
    pts = np.concatenate([centres[:, None], corners, tri, np.full((C, 1, 3), np.nan)], 1)
    # 0 centre, 1-4 corners (tl, tr, br, bl), 5-7 up triangle, 8 gap
    path = [0, 1, 8, 0, 2, 8, 0, 3, 8, 0, 4, 8, 1, 2, 3, 4, 1, 8, 5, 6, 7, 8]
    poly = pts[:, path]                                                           # (C, 22, 3)
    obj = poly.reshape(-1, 3).astype(object)
    obj[np.isnan(poly.reshape(-1, 3))] = None
    obj = obj.reshape(C, len(path), 3)
    names = [f"camera {c}" for c in range(C)] if names is None else [str(n) for n in names]
    if len(names) != C:
        raise ValueError(f"names must have one entry per camera ({C}), got {len(names)}")
    if colors is None:
        cols = [PALETTE[c % len(PALETTE)] for c in range(C)]
    elif isinstance(colors, str):
        cols = [colors] * C
    else:
        cols = list(colors)
        if len(cols) != C:
            raise ValueError(f"colors must be one colour or one per camera ({C}), got {len(cols)}")
    extra = {} if scene is None else {"scene": scene}
    traces = [
        go.Scatter3d(x=obj[c, :, 0].tolist(), y=obj[c, :, 1].tolist(), z=obj[c, :, 2].tolist(),
                     mode="lines", line=dict(color=cols[c], width=width), name=names[c],
                     legendgroup=f"camera:{names[c]}", hoverinfo="name", **extra)
        for c in range(C)
    ]
    traces.append(go.Scatter3d(
        x=centres[:, 0], y=centres[:, 1], z=centres[:, 2],
        mode="markers+text" if labels else "markers", text=names if labels else None,
        textposition="top center", marker=dict(size=4, color=cols), name="camera centres",
        showlegend=False, hovertext=names, hoverinfo="text+x+y+z", **extra))
    if axes:
        length = 0.5 * depth if axis_length is None else float(axis_length)
        for i, (axis, col) in enumerate(zip("xyz", ("red", "green", "blue"))):
            seg = np.stack([centres, centres + length * Rn[:, i]], 1)             # rows of R
            x, y, z = _none_separated(seg)
            traces.append(go.Scatter3d(x=x, y=y, z=z, mode="lines", line=dict(color=col, width=4),
                                       name=f"camera {axis} axes", showlegend=False, **extra))
    return traces


def skeleton_traces(
    joints3d: Any,
    skeleton: str | Skeleton = "h36m17",
    *,
    name: str = "pose",
    color: str | None = None,
    width: float = 5.0,
    marker_size: float = 3.0,
    dash: str | None = None,
    showlegend: bool = True,
    camera_frame: bool = False,
    scene: str | None = None,
) -> list[go.Scatter3d]:
    """Plotly traces of 3D skeletons: bones as ``None``-separated lines, joints as markers.

    Args:
        joints3d: ``(J, 3)`` or ``(P, J, 3)`` mm (world: ``z`` up). Bones with a non-finite end
            are left out.
        skeleton: a :class:`mvbook.skeletons.Skeleton` or its name.
        name: legend entry (all traces of the call share one legend group).
        color: one colour for all bones and joints; default left, right and central bones in
            :data:`SIDE_COLORS` (one trace per side) and black joints.
        width, marker_size, dash: line width (px), joint marker size, plotly dash style.
        camera_frame: the joints are in a camera frame (``x`` right, ``y`` down, ``z`` forward):
            draw ``(x, z, -y)`` so that up is up and depth goes into the screen.
        scene: plotly scene id for subplots.
    """
    skel = get_skeleton(skeleton)
    X = _joints(joints3d, "joints3d", skel, 3)                                    # (P, J, 3)
    if camera_frame:
        X = np.stack([X[..., 0], X[..., 2], -X[..., 1]], -1)
    bones, sides = _bones(skel)
    seg = X[:, bones]                                                             # (P, B, 2, 3)
    extra = {} if scene is None else {"scene": scene}
    groups = [(None, slice(None))] if color is not None else [
        (s, sides == s) for s in ("left", "right", "center") if (sides == s).any()]
    traces = []
    for side, sel in groups:
        x, y, z = _none_separated(seg[:, sel].reshape(-1, 2, 3))
        traces.append(go.Scatter3d(
            x=x, y=y, z=z, mode="lines", name=name, legendgroup=name,
            showlegend=showlegend and not traces,
            line=dict(color=color or SIDE_COLORS[side], width=width, dash=dash),
            hoverinfo="name", **extra))
    flat = X.reshape(-1, 3)
    ok = np.isfinite(flat).all(-1)
    text = np.tile(np.asarray(skel.joint_names, dtype=object), len(X))[ok]
    traces.append(go.Scatter3d(
        x=flat[ok, 0], y=flat[ok, 1], z=flat[ok, 2], mode="markers", name=name, legendgroup=name,
        showlegend=False, marker=dict(size=marker_size, color=color or "black"),
        hovertext=list(text), hoverinfo="text+x+y+z", **extra))
    return traces


def _trace_points(trace: Any) -> np.ndarray:
    """``(N, 3)`` float points of a 3D trace (``None`` as NaN)."""
    cols = []
    for key in ("x", "y", "z"):
        values = getattr(trace, key, None)
        if values is None:
            return np.zeros((0, 3))
        if isinstance(values, Mapping) and "bdata" in values:               # plotly's binary JSON
            values = np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
        arr = np.asarray(values, dtype=object).reshape(-1)
        arr[np.equal(arr, None)] = np.nan
        cols.append(arr.astype(np.float64))
    if len({len(c) for c in cols}) != 1:
        return np.zeros((0, 3))
    return np.stack(cols, -1)


def floor_traces(
    extent: Sequence[float], spacing: float = 1000.0, z: float = 0.0, scene: str | None = None
) -> list[go.Scatter3d]:
    """A floor grid at height ``z`` mm covering ``extent = (x0, x1, y0, y1)`` mm, rounded out to ``spacing``."""
    x0, x1, y0, y1 = (float(v) for v in extent)
    xs = np.arange(np.floor(x0 / spacing), np.ceil(x1 / spacing) + 1) * spacing
    ys = np.arange(np.floor(y0 / spacing), np.ceil(y1 / spacing) + 1) * spacing
    a = np.stack([np.stack([xs, np.full_like(xs, ys[0]), np.full_like(xs, z)], -1),
                  np.stack([xs, np.full_like(xs, ys[-1]), np.full_like(xs, z)], -1)], 1)
    b = np.stack([np.stack([np.full_like(ys, xs[0]), ys, np.full_like(ys, z)], -1),
                  np.stack([np.full_like(ys, xs[-1]), ys, np.full_like(ys, z)], -1)], 1)
    x, y, zz = _none_separated(np.concatenate([a, b]))
    extra = {} if scene is None else {"scene": scene}
    return [go.Scatter3d(x=x, y=y, z=zz, mode="lines", line=dict(color="lightgray", width=1),
                         name=f"floor ({spacing / 1000:g} m grid)", hoverinfo="skip", **extra)]


def fit_scene(
    fig: go.Figure, scene: str = "scene", margin: float = 0.05, min_margin: float = 50.0
) -> dict[str, tuple[float, float]]:
    """Set a 3D scene's axis ranges to contain every point of its traces, on one scale.

    The box of all points (every trace of ``fig`` drawn in ``scene``) is padded on each side by
    ``max(margin * largest extent, min_margin)`` mm; the aspect ratio follows the ranges, so a
    millimetre has the same length on the three axes. Returns the ranges ``{"x": (lo, hi), ...}``
    (empty and the layout untouched when the scene has no finite point).
    """
    pts = [_trace_points(tr) for tr in fig.data
           if getattr(tr, "type", None) == "scatter3d" and (tr.scene or "scene") == scene]
    allp = np.concatenate(pts) if pts else np.zeros((0, 3))
    allp = allp[np.isfinite(allp).all(-1)]
    if len(allp) == 0:
        return {}
    lo, hi = allp.min(0), allp.max(0)
    pad = max(margin * float((hi - lo).max()), min_margin)
    lo, hi = lo - pad, hi + pad
    span = hi - lo
    ratio = span / span.max()
    ranges = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate("xyz")}
    fig.update_layout({scene: dict(
        xaxis=dict(range=list(ranges["x"]), autorange=False),
        yaxis=dict(range=list(ranges["y"]), autorange=False),
        zaxis=dict(range=list(ranges["z"]), autorange=False),
        aspectmode="manual", aspectratio=dict(x=float(ratio[0]), y=float(ratio[1]), z=float(ratio[2])),
    )})
    return ranges


def scene_figure(
    content: Any = None,
    cameras: Camera | None = None,
    *,
    skeleton: str | Skeleton = "h36m17",
    names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    camera_names: Sequence[str] | None = None,
    camera_colors: Sequence[str] | str | None = None,
    depth: float | None = None,
    camera_axes: bool = False,
    floor: bool = False,
    camera_frame: bool = False,
    margin: float = 0.05,
    title: str | None = None,
    height: int = 550,
) -> go.Figure:
    """One 3D figure of poses and cameras whose axis ranges contain everything drawn.

    Args:
        content: what to draw besides the cameras: joints ``(J, 3)`` or ``(P, J, 3)`` mm (one
            pose each), a mapping ``{name: (J, 3) or (P, J, 3)}``, a sequence of such arrays, or
            a sequence of plotly traces (drawn as they are); ``None`` for cameras only.
        cameras: a :class:`~mvbook.geometry.Camera` (batch ``()`` or ``(C,)``) drawn with
            :func:`camera_traces` (``camera_names``, ``camera_colors``, ``depth``,
            ``camera_axes``), or ``None``.
        skeleton: the poses' skeleton.
        names: legend names of the poses (default the mapping's keys, or ``"pose p"``).
        colors: one colour per pose; default each pose coloured by side (:data:`SIDE_COLORS`).
        floor: draw a 1 m floor grid at ``z = 0`` under everything (world coordinates only).
        camera_frame: the poses are in a camera frame (see :func:`skeleton_traces`).
        margin: padding as a fraction of the largest extent (see :func:`fit_scene`).

    The ranges come from every trace in the figure (:func:`fit_scene`), so every joint, camera
    centre, frustum corner and floor line lies inside them, with equal scale on the three axes.
    """
    traces: list = []
    if content is not None:
        if isinstance(content, go.Figure):
            traces += list(content.data)
        elif isinstance(content, Sequence) and content and all(
                hasattr(tr, "to_plotly_json") for tr in content):
            traces += list(content)
        else:
            if isinstance(content, Mapping):
                items = list(content.items())
            elif isinstance(content, (list, tuple)) and content and np.ndim(content[0]) >= 2:
                items = [(None, c) for c in content]
            else:
                items = [(None, content)]
            skel = get_skeleton(skeleton)
            poses = []
            for key, value in items:
                arr = _joints(value, "content", skel, 3)
                poses += [(key, p) for p in arr] if key is None else [(key, arr)]
            if names is not None and len(names) != len(poses):
                raise ValueError(f"names must have one entry per pose ({len(poses)}), got {len(names)}")
            if colors is not None and (isinstance(colors, str) or len(colors) != len(poses)):
                raise ValueError(f"colors must have one colour per pose ({len(poses)})")
            for p, (key, arr) in enumerate(poses):
                label = names[p] if names is not None else key if key is not None else (
                    "pose" if len(poses) == 1 else f"pose {p}")
                traces += skeleton_traces(arr, skel, name=str(label),
                                          color=None if colors is None else colors[p],
                                          camera_frame=camera_frame)
    if cameras is not None:
        traces += camera_traces(cameras, names=camera_names, colors=camera_colors, depth=depth,
                                axes=camera_axes)
    fig = go.Figure(traces)
    if floor:
        pts = np.concatenate([_trace_points(tr) for tr in fig.data] or [np.zeros((0, 3))])
        pts = pts[np.isfinite(pts).all(-1)]
        if len(pts):
            lo, hi = pts.min(0), pts.max(0)
            fig.add_traces(floor_traces((lo[0], hi[0], lo[1], hi[1])))
    up = "up (mm)" if camera_frame else "z (mm)"
    fig.update_layout(
        title=title, height=height, margin=dict(l=0, r=0, t=40 if title else 10, b=0),
        scene=dict(xaxis_title="x (mm)", yaxis_title="depth (mm)" if camera_frame else "y (mm)",
                   zaxis_title=up),
        legend=dict(itemsizing="constant"),
    )
    fit_scene(fig, "scene", margin=margin)
    return fig
