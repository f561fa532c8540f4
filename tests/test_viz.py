"""mvbook.viz: figure ranges contain everything drawn, overlays draw one line per bone, image grids
check their input; the chapters' shared fixtures have the documented shapes."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from plotly.subplots import make_subplots  # noqa: E402

from mvbook import viz  # noqa: E402
from mvbook.data.fixtures import (  # noqa: E402
    H36M_LIKE_EYES,
    H36M_LIKE_IMAGE_SIZE,
    h36m_like_rig,
    standing_pose,
)
from mvbook.geometry import Camera  # noqa: E402
from mvbook.skeletons import H36M_17, SHELF_14  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _ranges(fig: go.Figure, scene: str = "scene") -> np.ndarray:
    """``(3, 2)`` axis ranges of a scene as set in the figure's layout."""
    sc = fig.layout[scene]
    out = []
    for axis in (sc.xaxis, sc.yaxis, sc.zaxis):
        assert axis.range is not None, "the figure must set explicit axis ranges"
        out.append([float(v) for v in axis.range])
    return np.asarray(out)


def _points(trace) -> np.ndarray:
    """``(N, 3)`` points of a plotly 3D trace, ``None`` gaps as NaN."""
    return np.stack([np.array([np.nan if v is None else v for v in getattr(trace, k)], float)
                     for k in "xyz"], -1)


def _inside(points: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    points = np.asarray(points, float).reshape(-1, 3)
    return ((points >= ranges[:, 0]) & (points <= ranges[:, 1])).all(-1)


def _far_rig(distance: float = 5000.0, n: int = 5, centre=(0.0, 0.0, 1000.0)) -> Camera:
    a = torch.linspace(0, 2 * math.pi, n + 1, dtype=torch.float64)[:-1]
    c = torch.tensor(centre, dtype=torch.float64)
    eyes = c + torch.stack([distance * a.cos(), distance * a.sin(), 800.0 * a.sin()], -1)
    return Camera.look_at(eyes, c, focal=500.0, image_size=(320, 240))


# ----------------------------------------------------------------------------------- 3D ranges
def test_scene_ranges_contain_far_pose_and_cameras_5m_away():
    far_pose = standing_pose() + torch.tensor([7000.0, -4000.0, 300.0], dtype=torch.float64)
    near_pose = standing_pose()
    cams = _far_rig(5000.0)
    fig = viz.scene_figure({"near": near_pose, "far": far_pose}, cams, depth=800.0)
    r = _ranges(fig)
    assert _inside(near_pose.numpy(), r).all()
    assert _inside(far_pose.numpy(), r).all()
    assert _inside(cams.center.numpy(), r).all()
    corners = viz.frustum_corners(cams, 800.0)
    assert corners.shape == (5, 4, 3)
    assert _inside(corners, r).all()
    # the head and the raised wrist of the far pose, explicitly (the joints that get clipped)
    for j in (H36M_17.index("head"), H36M_17.index("r_wrist")):
        assert _inside(far_pose[j].numpy(), r).all()
    # a margin on every side, and not absurdly more than the data
    pts = np.concatenate([near_pose.numpy(), far_pose.numpy(), cams.center.numpy(),
                          corners.reshape(-1, 3)])
    lo, hi = pts.min(0), pts.max(0)
    assert (r[:, 0] < lo).all() and (r[:, 1] > hi).all()
    assert ((r[:, 1] - r[:, 0]) < 1.5 * (hi - lo) + 200.0).all()


def test_scene_ranges_have_one_scale_on_all_axes():
    pose = standing_pose() + torch.tensor([0.0, 9000.0, 0.0], dtype=torch.float64)
    fig = viz.scene_figure(pose, h36m_like_rig())
    r = _ranges(fig)
    span = r[:, 1] - r[:, 0]
    ar = fig.layout.scene.aspectratio
    if fig.layout.scene.aspectmode == "manual":
        ratio = np.array([ar.x, ar.y, ar.z])
        assert np.allclose(ratio / ratio.max(), span / span.max(), rtol=1e-6)
    else:
        assert fig.layout.scene.aspectmode in ("data", "cube")
        if fig.layout.scene.aspectmode == "cube":
            assert np.allclose(span, span[0])


def test_ranges_contain_every_trace_point_including_floor_and_camera_axes():
    cams = h36m_like_rig()
    fig = viz.scene_figure(standing_pose(), cams, floor=True, camera_axes=True)
    r = _ranges(fig)
    for tr in fig.data:
        pts = _points(tr)
        pts = pts[np.isfinite(pts).all(-1)]
        assert len(pts) and _inside(pts, r).all(), tr.name


def test_poses_only_multiple_poses_and_camera_frame():
    poses = torch.stack([standing_pose() + torch.tensor([dx, 0.0, 0.0], dtype=torch.float64)
                         for dx in (-3000.0, 0.0, 4000.0)])
    fig = viz.scene_figure(poses, names=["a", "b", "c"], colors=["red", "green", "blue"])
    r = _ranges(fig)
    assert _inside(poses.numpy(), r).all()
    assert {tr.name for tr in fig.data if tr.showlegend is not False} == {"a", "b", "c"}
    # camera frame: (x, y, z)_cam drawn as (x, z, -y)
    Xc = standing_pose() + torch.tensor([0.0, 0.0, 6000.0], dtype=torch.float64)
    fig = viz.scene_figure(Xc, camera_frame=True)
    shown = torch.stack([Xc[:, 0], Xc[:, 2], -Xc[:, 1]], -1).numpy()
    assert _inside(shown, _ranges(fig)).all()


def test_camera_traces_from_arrays_and_camera_agree():
    cams = h36m_like_rig()
    a = viz.camera_traces(cams, depth=900.0)
    b = viz.camera_traces(K=cams.K.numpy(), R=cams.R.numpy(), t=cams.t.numpy(),
                          image_size=H36M_LIKE_IMAGE_SIZE, depth=900.0)
    assert len(a) == len(b) == 4 + 1                 # one frustum per camera + the centres
    for ta, tb in zip(a, b):
        assert np.allclose(_points(ta), _points(tb), equal_nan=True)
    centres = np.stack([a[-1].x, a[-1].y, a[-1].z], -1)
    assert np.allclose(centres, np.asarray(H36M_LIKE_EYES), atol=1e-6)
    # each frustum reaches the corners at the requested depth
    corners = viz.frustum_corners(cams, 900.0)
    depth = torch.einsum("cij,ckj->cki", cams.R, torch.as_tensor(corners))[..., 2] + cams.t[:, None, 2]
    assert torch.allclose(depth, torch.full_like(depth, 900.0))
    uv = cams.project(torch.as_tensor(corners))
    assert torch.allclose(uv[:, 0], torch.tensor([-0.5, -0.5], dtype=torch.float64).expand(4, 2))
    assert torch.allclose(uv[:, 2], torch.tensor([999.5, 999.5], dtype=torch.float64).expand(4, 2))
    with pytest.raises(ValueError, match="K, R and t"):
        viz.camera_traces(K=cams.K.numpy())


def test_fit_scene_in_subplots_uses_each_scenes_own_data():
    fig = make_subplots(rows=1, cols=2, specs=[[{"type": "scene"}] * 2])
    small = h36m_like_rig()
    big = _far_rig(20000.0, n=3)
    for tr in viz.camera_traces(small):
        fig.add_trace(tr, 1, 1)
    for tr in viz.camera_traces(big):
        fig.add_trace(tr, 1, 2)
    r1 = np.asarray(list(viz.fit_scene(fig, "scene").values()))
    r2 = np.asarray(list(viz.fit_scene(fig, "scene2").values()))
    assert _inside(small.center.numpy(), _ranges(fig, "scene")).all()
    assert _inside(big.center.numpy(), _ranges(fig, "scene2")).all()
    assert np.allclose(r1, _ranges(fig, "scene")) and np.allclose(r2, _ranges(fig, "scene2"))
    assert (r2[:, 1] - r2[:, 0]).max() > 4 * (r1[:, 1] - r1[:, 0]).max()


def test_skeleton_traces_segments_match_bones():
    X = standing_pose()
    X[5] = float("nan")                                       # l_knee unknown: its 2 bones go
    traces = viz.skeleton_traces(X, H36M_17, color="black")
    line, markers = traces
    x = np.array([np.nan if v is None else v for v in line.x], float)
    assert np.isnan(x[2::3]).all()                             # None after every segment
    n_bones = sum(1 for a, b in H36M_17.bones if 5 not in (a, b))
    assert len(x) == 3 * n_bones
    assert len(markers.x) == 16
    sided = viz.skeleton_traces(standing_pose(), "h36m17")
    assert {tr.line.color for tr in sided[:-1]} == set(viz.SIDE_COLORS.values())
    with pytest.raises(ValueError, match="joints3d"):
        viz.skeleton_traces(np.zeros((14, 3)), "h36m17")


# ----------------------------------------------------------------------------------- 2D overlays
def test_draw_skeleton_2d_one_line_per_bone():
    cams = h36m_like_rig()
    uv = cams[0].project(standing_pose())
    fig, ax = plt.subplots()
    lines = viz.draw_skeleton_2d(ax, uv, H36M_17)
    assert len(ax.lines) == len(lines) == len(H36M_17.bones) == 16
    for line, (a, b) in zip(lines, H36M_17.bones):            # skeleton order, right end points
        xy = np.asarray(line.get_xydata())
        assert np.allclose(xy, uv[[a, b]].numpy())
    colours = {matplotlib.colors.to_hex(line.get_color()) for line in lines}
    assert colours == set(viz.SIDE_COLORS.values())           # left, right, centre


def test_draw_skeleton_2d_persons_visibility_and_hidden():
    uv = np.random.default_rng(0).uniform(0, 100, (2, SHELF_14.num_joints, 2))
    vis = np.ones((2, SHELF_14.num_joints), bool)
    vis[1, 0] = False                                        # one joint hidden: one bone hidden
    fig, ax = plt.subplots()
    lines = viz.draw_skeleton_2d(ax, uv, SHELF_14, vis)
    assert len(ax.lines) == 2 * len(SHELF_14.bones)
    dashed = [ln for ln in lines if ln.get_linestyle() == "--"]
    assert len(dashed) == sum(1 for a, b in SHELF_14.bones if 0 in (a, b))
    fig, ax = plt.subplots()
    viz.draw_skeleton_2d(ax, uv, SHELF_14, vis, show_hidden=False)
    assert len(ax.lines) == 2 * len(SHELF_14.bones) - len(dashed)
    with pytest.raises(ValueError, match="visibility"):
        viz.draw_skeleton_2d(ax, uv, SHELF_14, np.ones(3, bool))
    with pytest.raises(ValueError, match="joints2d"):
        viz.draw_skeleton_2d(ax, uv[..., :1], SHELF_14)


def test_draw_skeleton_2d_image_size_sets_pixel_axes():
    fig, ax = plt.subplots()
    viz.draw_skeleton_2d(ax, np.full((17, 2), 10.0), "h36m17", image_size=(64, 48))
    assert ax.get_xlim() == (-0.5, 63.5)
    assert ax.get_ylim() == (47.5, -0.5)                      # v grows downwards


# ----------------------------------------------------------------------------------- image grid
@pytest.mark.parametrize("layout", ["chw", "hwc"])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_image_grid_accepts_both_layouts(layout, dtype):
    rng = np.random.default_rng(1)
    imgs = rng.uniform(0, 1, (3, 3, 20, 30))
    imgs = (imgs * 255).astype(np.uint8) if dtype == np.uint8 else imgs.astype(np.float32)
    if layout == "hwc":
        imgs = imgs.transpose(0, 2, 3, 1)
    fig, axes = viz.image_grid(torch.as_tensor(imgs), titles=["a", "b", "c"])
    assert len(axes) == 3
    shown = axes[1].images[0].get_array()
    assert shown.shape == (20, 30, 3)
    assert axes[2].get_title() == "c"


def test_image_grid_overlays_and_rows():
    imgs = np.zeros((5, 3, 16, 16), np.uint8)
    j2d = np.full((5, 17, 2), 8.0)
    fig, axes = viz.image_grid(imgs, joints2d=j2d, ncols=2)
    assert len(axes) == 5
    assert all(len(ax.lines) == 16 for ax in axes)
    assert sum(ax.get_visible() for ax in fig.axes) == 5     # the sixth grid cell is hidden


def test_image_grid_rejects_wrong_shape_naming_the_argument():
    with pytest.raises(ValueError, match=r"images must have shape .*\(2, 4, 8, 8\)"):
        viz.image_grid(np.zeros((2, 4, 8, 8)))
    with pytest.raises(ValueError, match="images"):
        viz.image_grid(np.zeros((8, 8)))
    with pytest.raises(ValueError, match="images"):
        viz.image_grid(np.zeros((16, 16, 3)))                 # one image without a batch dim
    with pytest.raises(ValueError, match="titles"):
        viz.image_grid(np.zeros((2, 3, 8, 8)), titles=["only one"])
    with pytest.raises(ValueError, match="joints2d"):
        viz.image_grid(np.zeros((2, 3, 8, 8)), joints2d=np.zeros((3, 17, 2)))


# ----------------------------------------------------------------------------------- fixtures
def test_fixture_shapes_and_geometry():
    rig = h36m_like_rig()
    assert isinstance(rig, Camera) and tuple(rig.batch_shape) == (4,)
    assert rig.K.shape == (4, 3, 3) and rig.R.shape == (4, 3, 3) and rig.t.shape == (4, 3)
    assert rig.dtype == torch.float64 and rig.dist is None
    assert rig.image_size.tolist() == [list(H36M_LIKE_IMAGE_SIZE)] * 4
    assert torch.allclose(rig.center, torch.tensor(H36M_LIKE_EYES, dtype=torch.float64), atol=1e-6)
    X = standing_pose()
    assert X.shape == (17, 3) and X.dtype == torch.float64
    assert X[H36M_17.index("head"), 2] > X[H36M_17.index("thorax"), 2] > X[0, 2] > 0
    assert X[H36M_17.index("r_wrist"), 0] > 0 > X[H36M_17.index("l_wrist"), 0]   # right is +x
    uv, z = rig.project_with_depth(X[None])                    # the person fills the views
    assert (z > 0).all() and ((uv > 100) & (uv < 900)).all()
    r32 = h36m_like_rig(torch.float32, dist=(-0.2, 0.2, 0.0, 0.0, 0.0))
    assert r32.dtype == torch.float32 and r32.dist.shape == (4, 5)
    assert standing_pose(torch.float32).dtype == torch.float32


def test_overlay_keeps_the_image_view_when_joints_fall_outside():
    uv = np.full((17, 2), 8.0)
    uv[3] = (-40.0, 90.0)                                     # an ankle far outside a 16 x 16 image
    fig, axes = viz.image_grid(np.zeros((1, 16, 16, 3), np.uint8), joints2d=uv[None])
    assert axes[0].get_xlim() == (-0.5, 15.5) and axes[0].get_ylim() == (15.5, -0.5)


def test_fit_scene_reads_figures_back_from_json():
    import plotly.io as pio

    fig = viz.scene_figure(standing_pose(), _far_rig(5000.0))
    back = pio.from_json(fig.to_json())
    before = _ranges(fig)
    assert np.allclose(np.asarray(list(viz.fit_scene(back).values())), before)
