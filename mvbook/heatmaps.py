"""Heatmaps: differentiable Gaussian rendering and (soft-)argmax readout, in 2D and 3D.

Conventions (DESIGN.md): pixel ``(u, v)`` with ``(0, 0)`` the centre of the top-left pixel,
``u`` to the right (column index), ``v`` down (row index). A heatmap stack has shape
``(..., J, H, W)``; pixel ``(u, v)`` is ``heatmaps[..., v, u]``. Image sizes are given as
``(width, height)``. Volumes have shape ``(..., J, D, H, W)`` and come with a grid of voxel-centre
coordinates ``(..., D, H, W, 3)`` (millimetres, world frame), so that the 3D readouts return
world coordinates directly.

Everything is batched over leading dimensions, runs on CPU or CUDA and is differentiable where
the docstring says so (rendering with respect to the point coordinates, soft-argmax with respect
to the heatmaps). No Python loops over joints or pixels.

- :func:`render_gaussian_2d` -- sub-pixel Gaussian blobs at 2D points (SelfPose3d sec. 3.4 renders
  projected 2D joints this way so gradients reach the 3D poses).
- :func:`render_gaussian_3d` -- Gaussian blobs at 3D points on a voxel grid.
- :func:`soft_argmax_2d` -- Iskakov et al. eqs. (1)-(2): softmax of ``beta * H`` over the pixels,
  then the expected pixel coordinate.
- :func:`soft_argmax_3d` -- Iskakov et al. eqs. (13)-(14) on a voxel grid.
- :func:`argmax_2d`, :func:`argmax_3d` -- the hard, non-differentiable readouts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch

from .validation import check_positive, check_shape, check_tensor

__all__ = [
    "argmax_2d",
    "argmax_3d",
    "pixel_coordinates",
    "refine_argmax_2d",
    "gaussian_factors_2d",
    "render_gaussian_2d",
    "render_gaussian_3d",
    "soft_argmax_2d",
    "soft_argmax_3d",
    "soft_argmax_errors",
]


# --------------------------------------------------------------------------------------------
# input validation
# --------------------------------------------------------------------------------------------
def _check_image_size(image_size: object) -> tuple[int, int]:
    if isinstance(image_size, torch.Tensor):
        if image_size.numel() != 2:
            raise ValueError(
                f"image_size must hold two values (width, height), got shape {tuple(image_size.shape)}"
            )
        image_size = [int(v) for v in image_size.reshape(-1).tolist()]
    if not isinstance(image_size, Sequence) or len(image_size) != 2:
        raise ValueError(f"image_size must be (width, height), got {image_size!r}")
    try:
        width, height = (int(v) for v in image_size)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"image_size must contain integers (width, height), got {image_size!r}"
        ) from err
    if width != image_size[0] or height != image_size[1] or width <= 0 or height <= 0:
        raise ValueError(
            f"image_size must be two positive integers (width, height), got {image_size!r}"
        )
    return width, height


def _sigma_tensor(
    sigma: float | torch.Tensor, like: torch.Tensor, name: str = "sigma"
) -> torch.Tensor:
    """sigma as a tensor broadcastable to ``like`` (shape (..., J)); must be > 0."""
    if isinstance(sigma, torch.Tensor):
        check_tensor(sigma, name, floating=True)
        s = sigma.to(device=like.device, dtype=like.dtype)
    elif isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
        s = torch.tensor(float(sigma), device=like.device, dtype=like.dtype)
    else:
        raise TypeError(
            f"{name} must be a float or a tensor broadcastable to (..., J), got {sigma!r}"
        )
    check_positive(s, name)
    try:
        torch.broadcast_shapes(s.shape, like.shape)
    except RuntimeError as err:
        raise ValueError(
            f"{name} of shape {tuple(s.shape)} does not broadcast against the points' (..., J) "
            f"shape {tuple(like.shape)}"
        ) from err
    return s


def pixel_coordinates(
    image_size: Sequence[int],
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(u (W,), v (H,))`` = ``(arange(W), arange(H))``.

    ``image_size`` is ``(width, height)``; pixel ``(0, 0)`` is the centre of the top-left pixel.
    """
    width, height = _check_image_size(image_size)
    u = torch.arange(width, device=device, dtype=dtype)
    v = torch.arange(height, device=device, dtype=dtype)
    return u, v


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------
def gaussian_factors_2d(
    points: torch.Tensor,
    image_size: Sequence[int],
    sigma: float | torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable factors of :func:`render_gaussian_2d`: ``H[..., j] = gy[..., j, :, None] *
    gx[..., j, None, :]``.

    ``gx[..., j, u] = exp(-(u - x_j)^2 / (2 sigma^2))`` at the pixel centres ``u`` and likewise
    ``gy`` (zeros for non-finite points). Work that is linear in a map (a dot product with a
    mask, a convolution) can be done on the factors in ``O(J (H + W))`` memory instead of
    ``O(J H W)``.

    Args: as :func:`render_gaussian_2d`. Returns ``gx (..., J, W)`` and ``gy (..., J, H)``.
    """
    points = check_tensor(points, "points", floating=True)
    check_shape(points, "points", "(..., J, 2)")
    width, height = _check_image_size(image_size)
    s = _sigma_tensor(sigma, points[..., 0])
    finite = torch.isfinite(points).all(dim=-1)  # (..., J)
    safe = torch.where(
        finite[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device)
    )
    u, v = pixel_coordinates((width, height), device=points.device, dtype=points.dtype)
    two_var = (2.0 * s * s)[..., None]  # broadcastable to (..., J, 1)
    gx = torch.exp(-((u - safe[..., 0:1]) ** 2) / two_var)  # (..., J, W)
    gy = torch.exp(-((v - safe[..., 1:2]) ** 2) / two_var)  # (..., J, H)
    return gx * finite[..., None].to(points.dtype), gy


def render_gaussian_2d(
    points: torch.Tensor,
    image_size: Sequence[int],
    sigma: float | torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """Render one isotropic Gaussian per 2D point, differentiably and with sub-pixel centres.

    ``H[..., j, v, u] = exp(-((u - x_j)^2 + (v - y_j)^2) / (2 sigma^2))`` evaluated at the pixel
    centres, so the peak value is 1 when the point falls on a pixel centre. The point is *not*
    rounded to a pixel (the usual quantisation that blocks gradients), so the maps are
    differentiable with respect to ``points`` (and ``sigma``): this is the differentiable
    rendering SelfPose3d (sec. 3.4) uses to turn projected 2D joints into heatmaps.

    Args:
        points: ``(..., J, 2)`` pixel coordinates ``(u, v)`` (floating point). Points may lie
            outside the image (their maps hold the visible tail or zeros). Non-finite points
            (NaN/inf, e.g. a missing joint or a point behind the camera) give all-zero maps.
        image_size: ``(width, height)`` of the maps in pixels.
        sigma: standard deviation in pixels, a float or a tensor broadcastable to ``(..., J)``.
        normalize: if True each map is divided by its sum over pixels (a probability map; an
            all-zero map stays zero).

    Returns:
        ``(..., J, H, W)`` heatmaps of the dtype/device of ``points``. The Gaussian is separable,
        so the cost is ``O(J (H + W))`` exponentials plus one outer product per map.
    """
    gx, gy = gaussian_factors_2d(points, image_size, sigma)
    heat = gy[..., :, None] * gx[..., None, :]  # (..., J, H, W)
    if normalize:
        total = heat.sum(dim=(-2, -1), keepdim=True)
        heat = heat / total.clamp_min(torch.finfo(points.dtype).tiny)
    return heat


def render_gaussian_3d(
    points: torch.Tensor,
    grid: torch.Tensor,
    sigma: float | torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """Render one isotropic 3D Gaussian per point on a voxel grid (differentiable in ``points``).

    ``V[..., j, d, h, w] = exp(-||grid[..., d, h, w, :] - X_j||^2 / (2 sigma^2))``.

    Args:
        points: ``(..., J, 3)`` coordinates in the grid's frame and units (mm, world frame).
            Non-finite points give all-zero volumes.
        grid: ``(..., D, H, W, 3)`` voxel-centre coordinates; its leading dims broadcast against
            those of ``points`` (a single grid ``(D, H, W, 3)`` serves a whole batch).
        sigma: standard deviation in the grid's units, float or tensor broadcastable to ``(..., J)``.
        normalize: if True each volume is divided by its sum over voxels.

    Returns:
        ``(..., J, D, H, W)``.
    """
    points = check_tensor(points, "points", floating=True)
    grid = check_tensor(grid, "grid", floating=True)
    check_shape(points, "points", "(..., J, 3)")
    check_shape(grid, "grid", "(..., D, H, W, 3)")
    grid = grid.to(dtype=points.dtype, device=points.device)
    s = _sigma_tensor(sigma, points[..., 0])
    finite = torch.isfinite(points).all(dim=-1)
    safe = torch.where(
        finite[..., None], points, torch.zeros((), dtype=points.dtype, device=points.device)
    )
    diff = grid[..., None, :, :, :, :] - safe[..., :, None, None, None, :]  # (..., J, D, H, W, 3)
    sq = (diff * diff).sum(dim=-1)
    two_var = (2.0 * s * s)[..., None, None, None]
    vol = torch.exp(-sq / two_var) * finite[..., None, None, None].to(points.dtype)
    if normalize:
        total = vol.sum(dim=(-3, -2, -1), keepdim=True)
        vol = vol / total.clamp_min(torch.finfo(points.dtype).tiny)
    return vol


# --------------------------------------------------------------------------------------------
# readout
# --------------------------------------------------------------------------------------------
def _spatial_distribution(
    flat: torch.Tensor, beta: float | torch.Tensor, normalize: bool
) -> torch.Tensor:
    """Distribution over the last axis: softmax(beta * flat) or flat / sum(flat)."""
    if normalize:
        if isinstance(beta, torch.Tensor):
            beta = beta.to(device=flat.device, dtype=flat.dtype)[..., None]
        return torch.softmax(beta * flat, dim=-1)
    total = flat.sum(dim=-1, keepdim=True)
    return flat / total


def _check_beta(beta: float | torch.Tensor) -> None:
    if isinstance(beta, bool) or not isinstance(beta, (int, float, torch.Tensor)):
        raise TypeError(f"beta must be a float or a tensor broadcastable to (..., J), got {beta!r}")


def soft_argmax_2d(
    heatmaps: torch.Tensor, beta: float | torch.Tensor = 100.0, normalize: bool = True
) -> torch.Tensor:
    """Differentiable 2D soft-argmax (Iskakov et al. 2019, eqs. 1-2).

    With ``normalize=True`` (the paper): ``H' = softmax(beta * H)`` over all ``H x W`` pixels of
    each map (eq. 1; ``beta`` is the "inverse temperature", the paper's alpha = 100), and the
    output is the centre of mass ``x = sum_r r H'(r)`` with ``r = (u, v)`` the pixel-centre
    coordinates (eq. 2). With ``normalize=False`` the heatmaps are used as non-negative weights,
    ``x = sum_r r H(r) / sum_r H(r)`` (centre of mass; ``beta`` is ignored), e.g. for maps that are
    already probability distributions.

    Accuracy: the expectation of a sampled, symmetric peak is unbiased only if the peak is wider
    than about half a pixel after the softmax and the rest of the map carries negligible mass.
    ``beta`` too small lets the flat background pull the estimate towards the image centre;
    ``beta`` too large on a narrow peak quantises it towards the nearest pixel centre.

    Args:
        heatmaps: ``(..., J, H, W)`` floating point.
        beta: inverse temperature, a float or a tensor broadcastable to ``(..., J)``.
        normalize: softmax (True) or plain normalisation by the sum (False).

    Returns:
        ``(..., J, 2)`` coordinates ``(u, v)`` in pixels, differentiable w.r.t. ``heatmaps``.
    """
    heatmaps = check_tensor(heatmaps, "heatmaps", floating=True)
    check_shape(heatmaps, "heatmaps", "(..., J, H, W)")
    _check_beta(beta)
    height, width = heatmaps.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"heatmaps must have non-empty H and W, got {tuple(heatmaps.shape)}")
    flat = heatmaps.reshape(*heatmaps.shape[:-2], height * width)
    prob = _spatial_distribution(flat, beta, normalize).reshape(heatmaps.shape)
    u, v = pixel_coordinates((width, height), device=heatmaps.device, dtype=heatmaps.dtype)
    x = (prob.sum(dim=-2) * u).sum(dim=-1)  # marginal over rows, expectation of u
    y = (prob.sum(dim=-1) * v).sum(dim=-1)
    return torch.stack([x, y], dim=-1)


@torch.no_grad()
def soft_argmax_errors(heatmaps: torch.Tensor, joints2d: torch.Tensor, visibility: torch.Tensor,
                       betas: Iterable[float], chunk: int = 64) -> dict[float, float]:
    """Mean 2D error (heatmap px, visible joints) of :func:`soft_argmax_2d` for each ``beta``.

    The measurement that chooses the inverse temperature of a soft-argmax (or of a softmax
    read-out) on the heatmaps of a frozen detector: a heatmap MSE leaves values in [0, 1], on
    which a large ``beta`` is nearly a hard argmax (it quantises to whole pixels) and a small one
    lets the background pull the estimate towards the map centre. Run it on training images.

    Args:
        heatmaps: ``(..., J, H, W)``; joints2d: ``(..., J, 2)`` true heatmap px; visibility:
            ``(..., J)`` bool; chunk: images per softmax (memory grows with ``chunk``).
    """
    heatmaps = check_tensor(heatmaps, "heatmaps", floating=True)
    check_shape(heatmaps, "heatmaps", "(..., J, H, W)")
    lead = tuple(heatmaps.shape[:-2])
    if tuple(joints2d.shape) != (*lead, 2):
        raise ValueError(f"joints2d must have shape {(*lead, 2)} like heatmaps, "
                         f"got {tuple(joints2d.shape)}")
    if tuple(visibility.shape) != lead:
        raise ValueError(f"visibility must have shape {lead} like heatmaps, "
                         f"got {tuple(visibility.shape)}")
    heatmaps = heatmaps.reshape(-1, *heatmaps.shape[-3:])
    joints2d = joints2d.reshape(-1, *joints2d.shape[-2:])
    visibility = visibility.reshape(-1, visibility.shape[-1]).bool()
    if not bool(visibility.any()):
        raise ValueError("visibility has no visible joint: nothing to measure")
    out = {}
    for beta in betas:
        total = torch.zeros((), dtype=torch.float64)
        for a in range(0, len(heatmaps), chunk):
            uv = soft_argmax_2d(heatmaps[a:a + chunk].float(), beta=float(beta))
            err = (uv - joints2d[a:a + chunk].to(uv)).norm(dim=-1)[visibility[a:a + chunk]]
            total += err.double().sum()
        out[float(beta)] = float(total / visibility.sum())
    return out


def soft_argmax_3d(
    volumes: torch.Tensor,
    grid: torch.Tensor,
    beta: float | torch.Tensor = 1.0,
    normalize: bool = True,
) -> torch.Tensor:
    """Differentiable 3D soft-argmax on a voxel grid (Iskakov et al. 2019, eqs. 13-14).

    ``V' = softmax(beta * V)`` over all ``D x H x W`` voxels of each joint volume (eq. 13; the
    paper uses ``beta = 1``), then ``y_j = sum_r grid(r) V'_j(r)`` (eq. 14), i.e. the expected
    voxel-centre coordinate. ``normalize=False`` uses ``V / sum V`` instead of the softmax.

    Args:
        volumes: ``(..., J, D, H, W)`` floating point.
        grid: ``(..., D, H, W, 3)`` voxel-centre coordinates (mm, world frame); leading dims
            broadcast against those of ``volumes``.
        beta: inverse temperature (float or tensor broadcastable to ``(..., J)``).
        normalize: softmax (True) or plain normalisation by the sum (False).

    Returns:
        ``(..., J, 3)`` in the grid's units, differentiable w.r.t. ``volumes`` and ``grid``.
    """
    volumes = check_tensor(volumes, "volumes", floating=True)
    grid = check_tensor(grid, "grid", floating=True)
    _check_beta(beta)
    dims = check_shape(volumes, "volumes", "(..., J, D, H, W)")
    check_shape(grid, "grid", "(..., D, H, W, 3) matching the volumes", sizes=dims)
    n = volumes.shape[-3] * volumes.shape[-2] * volumes.shape[-1]
    flat = volumes.reshape(*volumes.shape[:-3], n)
    prob = _spatial_distribution(flat, beta, normalize)  # (..., J, N)
    g = grid.to(dtype=volumes.dtype, device=volumes.device).reshape(*grid.shape[:-4], n, 3)
    return torch.matmul(prob, g)  # (..., J, N) @ (..., N, 3) -> (..., J, 3)


def argmax_2d(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard argmax of each map (not differentiable).

    Args:
        heatmaps: ``(..., J, H, W)``.

    Returns:
        ``coords (..., J, 2)`` integer pixel coordinates ``(u, v)`` stored in the heatmaps' dtype
        (float32 for integer input), and ``values (..., J)`` the maxima. Ties go to the first
        pixel in row-major order. NaN maps return the position of a NaN.
    """
    heatmaps = check_tensor(heatmaps, "heatmaps")
    check_shape(heatmaps, "heatmaps", "(..., J, H, W)")
    height, width = heatmaps.shape[-2:]
    if height == 0 or width == 0:
        raise ValueError(f"heatmaps must have non-empty H and W, got {tuple(heatmaps.shape)}")
    flat = heatmaps.reshape(*heatmaps.shape[:-2], height * width)
    values, index = flat.max(dim=-1)
    dtype = heatmaps.dtype if torch.is_floating_point(heatmaps) else torch.float32
    coords = torch.stack([index % width, torch.div(index, width, rounding_mode="floor")], dim=-1)
    return coords.to(dtype), values


def argmax_3d(volumes: torch.Tensor, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard argmax of each volume, read out on the grid (not differentiable).

    Args:
        volumes: ``(..., J, D, H, W)``.
        grid: ``(..., D, H, W, 3)`` voxel-centre coordinates, leading dims broadcast.

    Returns:
        ``coords (..., J, 3)`` (the grid coordinate of the maximal voxel) and ``values (..., J)``.
    """
    volumes = check_tensor(volumes, "volumes")
    grid = check_tensor(grid, "grid")
    dims = check_shape(volumes, "volumes", "(..., J, D, H, W)")
    check_shape(grid, "grid", "(..., D, H, W, 3) matching the volumes", sizes=dims)
    n = volumes.shape[-3] * volumes.shape[-2] * volumes.shape[-1]
    values, index = volumes.reshape(*volumes.shape[:-3], n).max(dim=-1)  # (..., J)
    g = grid.reshape(*grid.shape[:-4], n, 3)
    batch = torch.broadcast_shapes(index.shape[:-1], g.shape[:-2])
    index = index.expand(*batch, index.shape[-1])
    g = g.expand(*batch, n, 3)
    coords = torch.gather(g, -2, index[..., None].expand(*index.shape, 3))
    return coords, values


def refine_argmax_2d(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel peaks: the hard argmax refined by a Gaussian fit to its 3-pixel neighbourhood.

    Near its peak a Gaussian ``h = a exp(-(u - x)^2 / (2 s^2))`` has a quadratic logarithm, so
    the parabola through ``log h`` at ``u0 - 1, u0, u0 + 1`` peaks exactly at ``x``::

        x = u0 + (log h(u0-1) - log h(u0+1)) / (2 (log h(u0-1) - 2 log h(u0) + log h(u0+1)))

    (likewise in ``v``). Values are floored at ``1e-6`` of the peak before the logarithm; the
    step is clamped to ``[-1/2, 1/2]`` and is zero at a map border or where the neighbourhood is
    not a peak (a non-negative curvature). Not differentiable.

    Args:
        heatmaps: ``(..., J, H, W)`` floating point.

    Returns:
        ``coords (..., J, 2)`` sub-pixel ``(u, v)`` and ``values (..., J)`` the maxima.
    """
    heatmaps = check_tensor(heatmaps, "heatmaps", floating=True)
    coords, values = argmax_2d(heatmaps)
    height, width = heatmaps.shape[-2:]
    iu = coords[..., 0].long()
    iv = coords[..., 1].long()
    peak = values.abs().clamp_min(torch.finfo(heatmaps.dtype).tiny)[..., None]
    floor = peak * 1e-6

    def at(du: int, dv: int) -> torch.Tensor:
        u = (iu + du).clamp(0, width - 1)
        v = (iv + dv).clamp(0, height - 1)
        flat = heatmaps.reshape(*heatmaps.shape[:-2], height * width)
        h = flat.gather(-1, (v * width + u)[..., None])
        return torch.log(torch.maximum(h, floor))[..., 0]

    centre = at(0, 0)
    steps = []
    for axis, (index, size) in enumerate(((iu, width), (iv, height))):
        minus = at(-1, 0) if axis == 0 else at(0, -1)
        plus = at(1, 0) if axis == 0 else at(0, 1)
        curvature = minus - 2 * centre + plus
        inside = (index > 0) & (index < size - 1) & (curvature < 0)
        step = 0.5 * (minus - plus) / torch.where(inside, curvature, -torch.ones_like(curvature))
        steps.append(torch.where(inside, step.clamp(-0.5, 0.5), torch.zeros_like(step)))
    return coords + torch.stack(steps, -1).to(coords.dtype), values
