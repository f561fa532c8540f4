"""Prepared wrong answers to the book's exercises, one list per solution cell ``grade_id``.

Each entry is ``(label, code)``: ``code`` replaces the solution cell, and the exercise's check
cell must then fail. These are the mistakes a student plausibly makes (a missing half pixel, a
forgotten intrinsic matrix, a squared weight, a hard-coded number, a copied amodal box), so a
check that accepts one of them does not check the exercise.
"""

from __future__ import annotations

WRONG_ANSWERS: dict[str, list[tuple[str, str]]] = {
    # 01 cameras and projection
    "ch01-ex1-solution": [
        ("pixel centres instead of the image edges", """
def horizontal_fov_deg(K, width):
    return math.degrees(2 * math.atan((width - 1) / 2 / float(K[0, 0])))
"""),
        ("radians instead of degrees", """
def horizontal_fov_deg(K, width):
    fx, cx = float(K[0, 0]), float(K[0, 2])
    return math.atan((cx + 0.5) / fx) + math.atan((width - 0.5 - cx) / fx)
"""),
        ("a hard-coded angle", """
def horizontal_fov_deg(K, width):
    return 46.0
"""),
    ],
    "ch01-ex2-solution": [
        ("scaling about pixel centres (no half pixel)", """
def crop_resize_K(K, box, size):
    x0, y0, x1, y1 = box
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    A = torch.tensor([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0], [0.0, 0.0, 1.0]], dtype=K.dtype)
    return A @ K
"""),
        ("resize without the crop's shift", """
def crop_resize_K(K, box, size):
    x0, y0, x1, y1 = box
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    A = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]], dtype=K.dtype)
    return A @ K
"""),
    ],
    "ch01-ex3-solution": [
        ("the translation column of P", """
def center_from_P(P):
    return P[:, 3]
"""),
        ("the null vector, not dehomogenised", """
def center_from_P(P):
    return torch.linalg.svd(P)[2][-1][:3]
"""),
    ],
    # 02 epipolar geometry
    "ch02-ex1-solution": [
        ("left and right null vectors swapped", """
def epipoles(F):
    U, S, Vh = torch.linalg.svd(F)
    e_a, e_b = U[:, -1], Vh[-1]
    return e_a[:2] / e_a[2], e_b[:2] / e_b[2]
"""),
    ],
    "ch02-ex2-solution": [
        ("the singular values of F (intrinsics forgotten)", """
def essential_singular_values(F, K_a, K_b):
    return torch.linalg.svdvals(F / F.norm())
"""),
        ("the textbook values, hard-coded", """
def essential_singular_values(F, K_a, K_b):
    return torch.tensor([2 ** -0.5, 2 ** -0.5, 0.0], dtype=F.dtype)
"""),
    ],
    "ch02-ex3-solution": [
        ("F applied from the wrong side", """
def transfer(uv_a, uv_b, F_ac, F_bc):
    one = torch.ones_like(uv_a[:, :1])
    l1 = torch.cat([uv_a, one], -1) @ F_ac
    l2 = torch.cat([uv_b, one], -1) @ F_bc
    x = torch.linalg.cross(l1, l2)
    return x[:, :2] / x[:, 2:]
"""),
    ],
    # 03 triangulation
    "ch03-ex1-solution": [
        ("the foot of the perpendicular from o2 on ray 1", """
def midpoint(o1, d1, o2, d2):
    s = ((o2 - o1) * d1).sum(-1) / (d1 * d1).sum(-1)
    return o1 + s[:, None] * d1
"""),
        ("the closest point on ray 1 only", """
def midpoint(o1, d1, o2, d2):
    b = ((o2 - o1) * d1).sum(-1), ((o2 - o1) * d2).sum(-1)
    d12 = (d1 * d2).sum(-1)
    a11, a22 = (d1 * d1).sum(-1), (d2 * d2).sum(-1)
    s = (b[0] * a22 - b[1] * d12) / (a11 * a22 - d12**2)
    return o1 + s[:, None] * d1
"""),
    ],
    "ch03-ex2-solution": [
        ("squared distances", """
def reproj_error(X, uv, P):
    Xh = torch.cat([X, torch.ones_like(X[:, :1])], -1)
    proj = torch.einsum("cij,nj->cni", P, Xh)
    return ((proj[..., :2] / proj[..., 2:] - uv) ** 2).sum(-1)
"""),
    ],
    "ch03-ex3-solution": [
        ("inverse variance, 1/sigma**2", """
def weights_from_sigma(sigma):
    return 1.0 / sigma**2
"""),
        ("drop the noisy view", """
def weights_from_sigma(sigma):
    return (sigma == sigma.min()).to(sigma.dtype)
"""),
        ("equal weights", """
def weights_from_sigma(sigma):
    return torch.ones_like(sigma)
"""),
        ("section 2's best weights, hard-coded", """
def weights_from_sigma(sigma):
    return torch.tensor([1.0, 1.0, 1.0, 0.5], dtype=sigma.dtype)
"""),
    ],
    # 04 heatmaps and soft-argmax
    "ch04-ex1-solution": [
        ("the plain argmax", """
def refine_argmax(heatmaps):
    return argmax_2d(heatmaps)[0]
"""),
        ("the offset with the wrong sign", """
def refine_argmax(heatmaps):
    coords, _ = argmax_2d(heatmaps)
    u0, v0 = coords[..., 0].long(), coords[..., 1].long()
    idx = torch.arange(heatmaps.shape[0], device=heatmaps.device)
    logh = heatmaps.clamp_min(1e-30).log()
    def offset(m1, c0, p1):
        return (p1 - m1) / (2 * (m1 - 2 * c0 + p1))
    du = offset(logh[idx, v0, u0 - 1], logh[idx, v0, u0], logh[idx, v0, u0 + 1])
    dv = offset(logh[idx, v0 - 1, u0], logh[idx, v0, u0], logh[idx, v0 + 1, u0])
    return coords + torch.stack([du, dv], dim=-1)
"""),
    ],
    "ch04-ex2-solution": [
        ("the global soft-argmax", """
def local_soft_argmax(heatmaps, beta, radius=4):
    return soft_argmax_2d(heatmaps[:, None], beta=beta)[:, 0]
"""),
        ("window coordinates (the window's offset forgotten)", """
def local_soft_argmax(heatmaps, beta, radius=4):
    coords, _ = argmax_2d(heatmaps)
    n = heatmaps.shape[0]
    offs = torch.arange(-radius, radius + 1, device=heatmaps.device)
    rows = (coords[:, 1].long()[:, None] + offs).clamp(0, heatmaps.shape[-2] - 1)
    cols = (coords[:, 0].long()[:, None] + offs).clamp(0, heatmaps.shape[-1] - 1)
    idx = torch.arange(n, device=heatmaps.device)[:, None, None]
    window = heatmaps[idx, rows[:, :, None], cols[:, None, :]]
    return soft_argmax_2d(window[:, None], beta=beta)[:, 0]
"""),
    ],
    "ch04-ex3-solution": [
        ("the factor beta forgotten", """
def soft_argmax_grad_u(heatmap, beta):
    h, w = heatmap.shape
    p = torch.softmax(beta * heatmap.flatten(), dim=0).reshape(h, w)
    u = torch.arange(w, dtype=heatmap.dtype, device=heatmap.device)
    x_u = (p.sum(0) * u).sum()
    return p * (u[None, :] - x_u)
"""),
        ("the softmax Jacobian's diagonal only", """
def soft_argmax_grad_u(heatmap, beta):
    h, w = heatmap.shape
    p = torch.softmax(beta * heatmap.flatten(), dim=0).reshape(h, w)
    u = torch.arange(w, dtype=heatmap.dtype, device=heatmap.device)
    return beta * p * u[None, :]
"""),
    ],
    # 05 the multiview studio
    "ch05-ex1-solution": [
        ("the amodal box copied", """
mask_boxes = s["bbox"][:, 0].clone()
"""),
        ("slice bounds (one past the last pixel)", """
def tight_boxes(masks, p=0):
    boxes = torch.zeros(masks.shape[0], 4)
    for c in range(masks.shape[0]):
        ys, xs = torch.nonzero(masks[c] == p + 1, as_tuple=True)
        if len(xs):
            boxes[c] = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
    return boxes
mask_boxes = tight_boxes(s["masks"])
"""),
    ],
    "ch05-ex2-solution": [
        ("the original resolution", """
rig2 = make_rig("h36m", (W, H))
renderer2 = Rn.Renderer(rig2.cameras, rig2.room, room_style(seed, "h36m", rig2.room.outdoor), device=render_device)
out2 = renderer2.render(prims.float(), looks, lights, joints.float())
"""),
    ],
    # 11 weakly supervised 2.5D
    "ch11-ex1-solution": [
        ("a guessed negative depth, -1 in every view", """
z_other = -torch.ones(4, dtype=torch.float64)
"""),
        ("the mirrored root, -z_root", """
z_other = -W.root_depth_from_25d(uv, zr, cams.K)
"""),
    ],
    "ch11-ex2-solution": [
        ("the factors themselves, hard-coded", """
shrunk_losses = [1, 0.1, 0.01]
flat_losses = [1, 0.1, 0.01]
"""),
        ("the exact poses (no noise): every loss is zero", """
base = Xc - Xc[:, :1]
shrunk_losses = [float(W.multiview_consistency_loss((f * base)[None], delta=0.0)) for f in (1, 0.1, 0.01)]
flat_losses = [float(W.multiview_consistency_loss(f * (flat - flat[:, :, :1]), delta=0.0)) for f in (1, 0.1, 0.01)]
"""),
    ],
    "ch11-ex3-solution": [
        ("the weights ignored", """
def weighted_mc(poses, w):
    return W.multiview_consistency_loss(poses, delta=0.0)
"""),
        ("weights in the mean only, not in the alignment", """
def weighted_mc(poses, w):
    C = poses.shape[-3]
    cen = poses - poses[..., :1, :]
    src = cen[:, None].expand(-1, C, C, -1, -1)
    dst = cen[:, :, None].expand(-1, C, C, -1, -1)
    ww = w[:, None, :, :] * w[:, :, None, :]
    off = ~torch.eye(C, dtype=torch.bool)
    src, dst, ww = src[:, off], dst[:, off], ww[:, off]
    R, _, t = procrustes(src.double(), dst.double())
    al = (src.double() @ R.transpose(-1, -2) + t[..., None, :]).to(poses.dtype)
    dist = (al - dst).abs().sum(-1)
    return (dist * ww).sum() / ww.sum()
"""),
    ],
    # 10 learnable triangulation
    "ch10-ex1-solution": [
        ("the plain MSE (no threshold)", """
def soft_mse(pred, gt, eps):
    return ((pred - gt) ** 2).mean()
"""),
        ("the threshold applied to the mean, not per coordinate", """
def soft_mse(pred, gt, eps):
    e = ((pred - gt) ** 2).mean()
    return e if e <= eps else e ** 0.1 * eps ** 0.9
"""),
        ("exponent 0.5 above the threshold", """
def soft_mse(pred, gt, eps):
    e = (pred - gt) ** 2
    return torch.where(e > eps, e.clamp_min(eps) ** 0.5 * eps ** 0.5, e).mean()
"""),
    ],
    "ch10-ex2-solution": [
        ("the yaw forgotten", """
def cube(center, L, R, yaw):
    x = (torch.arange(R, dtype=torch.float32) + 0.5) * L / R - L / 2
    zz, yy, xx = torch.meshgrid(x, x, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1) + center
"""),
        ("voxel corners instead of centres", """
def cube(center, L, R, yaw):
    x = torch.linspace(-L / 2, L / 2, R)
    zz, yy, xx = torch.meshgrid(x, x, x, indexing="ij")
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.stack([c * xx - s * yy, s * xx + c * yy, zz], dim=-1) + center
"""),
        ("the yaw's sign flipped", """
def cube(center, L, R, yaw):
    x = (torch.arange(R, dtype=torch.float32) + 0.5) * L / R - L / 2
    zz, yy, xx = torch.meshgrid(x, x, x, indexing="ij")
    c, s = math.cos(yaw), math.sin(yaw)
    return torch.stack([c * xx + s * yy, -s * xx + c * yy, zz], dim=-1) + center
"""),
    ],
    "ch10-ex3-solution": [
        ("a guessed weight", "best_w = 0.4\n"),
        ("drop the noisy view", "best_w = 0.0\n"),
        ("equal weights", "best_w = 1.0\n"),
        ("the inverse variance ratio (sigma / sigma_2) ** 2", "best_w = 0.11\n"),
    ],
    # 20 MCSS
    "ch20-ex1-solution": [
        ("both rows and columns (the library's two-sided mining)", """
def loss_rows(anchor, positive, alpha, beta):
    return M.hardnet_loss(anchor, positive, alpha, beta)[0]
"""),
        ("no beta mask", """
def loss_rows(anchor, positive, alpha, beta):
    D = M.distance_matrix(anchor, positive)
    off = ~torch.eye(D.shape[0], dtype=torch.bool)
    d_min = torch.where(off, D, torch.full_like(D, float("inf"))).min(dim=1).values
    return (torch.diagonal(D) + (alpha - d_min).clamp_min(0)).mean()
"""),
        ("the diagonal not excluded", """
def loss_rows(anchor, positive, alpha, beta):
    D = M.distance_matrix(anchor, positive)
    d_min = torch.where(D > beta, D, torch.full_like(D, float("inf"))).min(dim=1).values
    hinge = torch.where(torch.isfinite(d_min), (alpha - d_min).clamp_min(0), torch.zeros_like(d_min))
    return (torch.diagonal(D) + hinge).mean()
"""),
        ("the literal delta(D) * D (masked entries count as 0)", """
def loss_rows(anchor, positive, alpha, beta):
    D = M.distance_matrix(anchor, positive)
    off = ~torch.eye(D.shape[0], dtype=torch.bool)
    dm = torch.where(D > beta, D, torch.zeros_like(D))
    d_min = torch.where(off, dm, torch.full_like(D, float("inf"))).min(dim=1).values
    return (torch.diagonal(D) + (alpha - d_min).clamp_min(0)).mean()
"""),
    ],
    "ch20-ex2-solution": [
        ("the unsigned angle of eq. 3", """
def heading_deg(X):
    u = X[:, cfg.left_hip] - X[:, cfg.root_joint]
    uxy = u[:, :2] / u[:, :2].norm(dim=-1, keepdim=True)
    return torch.rad2deg(torch.arccos(uxy[:, 0].clamp(-1, 1)))
"""),
        ("radians instead of degrees", """
def heading_deg(X):
    u = X[:, cfg.left_hip] - X[:, cfg.root_joint]
    return torch.atan2(u[:, 1], u[:, 0])
"""),
        ("x and y swapped in atan2", """
def heading_deg(X):
    u = X[:, cfg.left_hip] - X[:, cfg.root_joint]
    return torch.rad2deg(torch.atan2(u[:, 0], u[:, 1]))
"""),
        ("the right hip instead of the left", """
def heading_deg(X):
    u = X[:, 1] - X[:, cfg.root_joint]
    return torch.rad2deg(torch.atan2(u[:, 1], u[:, 0]))
"""),
    ],
    "ch20-ex3-solution": [
        ("the query's own camera not excluded", """
errs = []
for i in range(n_ex):
    j = int((emb_ex - emb_ex[i]).norm(dim=-1).argmin())
    errs.append(float(pa_mpjpe(poses_ex[j], poses_ex[i])))
my_at1 = sum(errs) / len(errs)
"""),
        ("ranked by the true poses (the oracle)", """
my_at1 = retrieval_pa_mpjpe_at_k(emb_ex[:n_ex], emb_ex, poses_ex[:n_ex], poses_ex, k=1, oracle=True,
                                 query_views=views_ex[:n_ex], gallery_views=views_ex)
"""),
        ("the mean over the 5 nearest instead of the nearest", """
my_at1 = retrieval_pa_mpjpe_at_k(emb_ex[:n_ex], emb_ex, poses_ex[:n_ex], poses_ex, k=5,
                                 query_views=views_ex[:n_ex], gallery_views=views_ex)
"""),
        ("MPJPE without the Procrustes alignment", """
errs = []
for i in range(n_ex):
    dist = (emb_ex - emb_ex[i]).norm(dim=-1)
    dist[views_ex == views_ex[i]] = float("inf")
    j = int(dist.argmin())
    errs.append(float((poses_ex[j] - poses_ex[i]).norm(dim=-1).mean()))
my_at1 = sum(errs) / len(errs)
"""),
    ],
    # 30 unsupervised 3D keypoint discovery
    "ch30-ex1-solution": [
        ("the box centre read as a pixel centre (half a pixel off)", """
def stn_theta(box, image_size):
    x0, y0, x1, y1 = (float(v) for v in box)
    W_, H_ = image_size
    w_, h_ = x1 - x0, y1 - y0
    return torch.tensor([[w_ / W_, 0.0, (2 * (x0 + w_ / 2) + 1) / W_ - 1],
                         [0.0, h_ / H_, (2 * (y0 + h_ / 2) + 1) / H_ - 1]])
"""),
        ("the inverse scale (frame to patch)", """
def stn_theta(box, image_size):
    x0, y0, x1, y1 = (float(v) for v in box)
    W_, H_ = image_size
    w_, h_ = x1 - x0, y1 - y0
    return torch.tensor([[W_ / w_, 0.0, (2 * x0 + w_) / W_ - 1], [0.0, H_ / h_, (2 * y0 + h_) / H_ - 1]])
"""),
        ("the box corner instead of its centre", """
def stn_theta(box, image_size):
    x0, y0, x1, y1 = (float(v) for v in box)
    W_, H_ = image_size
    w_, h_ = x1 - x0, y1 - y0
    return torch.tensor([[w_ / W_, 0.0, 2 * x0 / W_ - 1], [0.0, h_ / H_, 2 * y0 / H_ - 1]])
"""),
    ],
    "ch30-ex2-solution": [
        ("the Gaussian not normalised to sum 1 (eq. 12 skipped)", """
def coverage(points, mask, sigma):
    r = torch.arange(mask.shape[-1], dtype=points.dtype)
    gx = torch.exp(-((r[None] - points[:, :1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((r[None] - points[:, 1:]) ** 2) / (2 * sigma**2))
    Hn = gy[:, :, None] * gx[:, None, :]
    return (1 - (Hn * mask).sum((-2, -1))).abs().mean()
"""),
        ("normalised by the peak instead of the sum", """
def coverage(points, mask, sigma):
    r = torch.arange(mask.shape[-1], dtype=points.dtype)
    gx = torch.exp(-((r[None] - points[:, :1]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((r[None] - points[:, 1:]) ** 2) / (2 * sigma**2))
    Hn = gy[:, :, None] * gx[:, None, :]
    Hn = Hn / Hn.amax((-2, -1), keepdim=True)
    return (1 - (Hn * mask).sum((-2, -1))).abs().mean()
"""),
        ("the mask at the nearest pixel only", """
def coverage(points, mask, sigma):
    idx = points.round().long().clamp(0, mask.shape[-1] - 1)
    return (1 - mask[idx[:, 1], idx[:, 0]]).abs().mean()
"""),
        ("u and v swapped", """
def coverage(points, mask, sigma):
    r = torch.arange(mask.shape[-1], dtype=points.dtype)
    gx = torch.exp(-((r[None] - points[:, 1:]) ** 2) / (2 * sigma**2))
    gy = torch.exp(-((r[None] - points[:, :1]) ** 2) / (2 * sigma**2))
    Hn = gy[:, :, None] * gx[:, None, :]
    Hn = Hn / Hn.sum((-2, -1), keepdim=True)
    return (1 - (Hn * mask).sum((-2, -1))).abs().mean()
"""),
    ],
    # 50 selfpose3d
    "ch50-ex1-solution": [
        ("image px used as heatmap px (no conversion)", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    u = torch.arange(heatmap_size[0], dtype=root.dtype)
    v = torch.arange(heatmap_size[1], dtype=root.dtype)
    d2 = (u[None, None, :] - uv[:, None, None, 0]) ** 2 + (v[None, :, None] - uv[:, None, None, 1]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))
"""),
        ("scaled to heatmap px without the half-pixel shift", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    uv = uv * torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]], dtype=root.dtype)
    u = torch.arange(heatmap_size[0], dtype=root.dtype)
    v = torch.arange(heatmap_size[1], dtype=root.dtype)
    d2 = (u[None, None, :] - uv[:, None, None, 0]) ** 2 + (v[None, :, None] - uv[:, None, None, 1]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))
"""),
        ("sigma not squared", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    uv = (uv + 0.5) * torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]], dtype=root.dtype) - 0.5
    u = torch.arange(heatmap_size[0], dtype=root.dtype)
    v = torch.arange(heatmap_size[1], dtype=root.dtype)
    d2 = (u[None, None, :] - uv[:, None, None, 0]) ** 2 + (v[None, :, None] - uv[:, None, None, 1]) ** 2
    return torch.exp(-d2 / (2 * sigma))
"""),
        ("u and v swapped", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    uv = (uv + 0.5) * torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]], dtype=root.dtype) - 0.5
    u = torch.arange(heatmap_size[0], dtype=root.dtype)
    v = torch.arange(heatmap_size[1], dtype=root.dtype)
    d2 = (u[None, None, :] - uv[:, None, None, 1]) ** 2 + (v[None, :, None] - uv[:, None, None, 0]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))
"""),
        ("the projection rounded to a pixel (quantised)", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    uv = ((uv + 0.5) * torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]], dtype=root.dtype) - 0.5).round()
    u = torch.arange(heatmap_size[0], dtype=root.dtype)
    v = torch.arange(heatmap_size[1], dtype=root.dtype)
    d2 = (u[None, None, :] - uv[:, None, None, 0]) ** 2 + (v[None, :, None] - uv[:, None, None, 1]) ** 2
    return torch.exp(-d2 / (2 * sigma**2))
"""),
        ("normalised to sum 1 instead of peak 1", """
def synthetic_root_heatmap(root, P, image_size, heatmap_size, sigma):
    h_ = P @ torch.cat([root, torch.ones(1, dtype=root.dtype)])
    uv = h_[:, :2] / h_[:, 2:]
    uv = (uv + 0.5) * torch.tensor([heatmap_size[0] / image_size[0], heatmap_size[1] / image_size[1]], dtype=root.dtype) - 0.5
    return render_gaussian_2d(uv, heatmap_size, sigma, normalize=True)
"""),
    ],
    "ch50-ex2-solution": [
        ("the centre at (W / 2, H / 2)", """
def affine_points(uv, angle, scale, image_size):
    c_ = torch.tensor([image_size[0] / 2, image_size[1] / 2], dtype=uv.dtype)
    R_ = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=uv.dtype)
    return scale * (uv - c_) @ R_.T + c_
"""),
        ("rotated and scaled about the pixel origin", """
def affine_points(uv, angle, scale, image_size):
    R_ = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=uv.dtype)
    return scale * uv @ R_.T
"""),
        ("rotated the other way", """
def affine_points(uv, angle, scale, image_size):
    c_ = torch.tensor([(image_size[0] - 1) / 2, (image_size[1] - 1) / 2], dtype=uv.dtype)
    R_ = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=uv.dtype)
    return scale * (uv - c_) @ R_ + c_
"""),
        ("scaled after moving back from the centre", """
def affine_points(uv, angle, scale, image_size):
    c_ = torch.tensor([(image_size[0] - 1) / 2, (image_size[1] - 1) / 2], dtype=uv.dtype)
    R_ = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=uv.dtype)
    return scale * ((uv - c_) @ R_.T + c_)
"""),
        ("the inverse transform (image to original)", """
def affine_points(uv, angle, scale, image_size):
    c_ = torch.tensor([(image_size[0] - 1) / 2, (image_size[1] - 1) / 2], dtype=uv.dtype)
    R_ = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=uv.dtype)
    return (uv - c_) @ R_ / scale + c_
"""),
    ],
    "ch50-ex3-solution": [
        ("the best view dropped instead of the worst", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    per_view = ((pred - target).abs().mean(-1) * m).sum(-1) / n.clamp_min(1)
    keep = (n > 0).clone()
    if int(keep.sum()) >= 2:
        keep[torch.where(keep, per_view, torch.full_like(per_view, math.inf)).argmin()] = False
    return per_view[keep].mean()
"""),
        ("no view dropped (eq. 5)", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    per_view = ((pred - target).abs().mean(-1) * m).sum(-1) / n.clamp_min(1)
    return per_view[n > 0].mean()
"""),
        ("divided by every counted view (K instead of K - 1)", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    per_view = ((pred - target).abs().mean(-1) * m).sum(-1) / n.clamp_min(1)
    has = n > 0
    keep = has.clone()
    if int(has.sum()) >= 2:
        keep[torch.where(has, per_view, torch.full_like(per_view, -1.0)).argmax()] = False
    return per_view[keep].sum() / has.sum()
"""),
        ("the mask ignored", """
def hard_l1(pred, target, mask):
    per_view = (pred - target).abs().mean((-1, -2))
    keep = torch.ones_like(per_view, dtype=torch.bool)
    keep[per_view.argmax()] = False
    return per_view[keep].mean()
"""),
        ("squared errors (L2) instead of L1", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    per_view = (((pred - target) ** 2).mean(-1) * m).sum(-1) / n.clamp_min(1)
    keep = (n > 0).clone()
    if int(keep.sum()) >= 2:
        keep[torch.where(keep, per_view, torch.full_like(per_view, -1.0)).argmax()] = False
    return per_view[keep].mean()
"""),
        ("the kept views' joints pooled instead of averaging per view", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    err = (pred - target).abs().mean(-1) * m
    per_view = err.sum(-1) / n.clamp_min(1)
    keep = (n > 0).clone()
    if int(keep.sum()) >= 2:
        keep[torch.where(keep, per_view, torch.full_like(per_view, -1.0)).argmax()] = False
    return err[keep].sum() / n[keep].sum()
"""),
        ("the worst view dropped even when it is the only one", """
def hard_l1(pred, target, mask):
    m = mask.to(pred.dtype)
    n = m.sum(-1)
    per_view = ((pred - target).abs().mean(-1) * m).sum(-1) / n.clamp_min(1)
    keep = (n > 0).clone()
    keep[torch.where(keep, per_view, torch.full_like(per_view, -1.0)).argmax()] = False
    return per_view[keep].mean()
"""),
    ],
    # 40 dense keypoints
    "ch40-ex1-solution": [
        ("normalised over view a (columns) instead of rows", """
def matchability(u_a, u_b, g_a, g_b, sigma):
    s = -((u_a[:, None] - u_b[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.exp(s) * (g_a[:, None] == g_b[None])
    return w / w.sum(0, keepdim=True).clamp_min(1e-300)
"""),
        ("groups ignored", """
def matchability(u_a, u_b, g_a, g_b, sigma):
    return torch.softmax(-((u_a[:, None] - u_b[None]) ** 2).sum(-1) / (2 * sigma**2), dim=1)
"""),
        ("sigma not squared", """
def matchability(u_a, u_b, g_a, g_b, sigma):
    s = -((u_a[:, None] - u_b[None]) ** 2).sum(-1) / (2 * sigma)
    w = torch.exp(s) * (g_a[:, None] == g_b[None])
    return w / w.sum(1, keepdim=True).clamp_min(1e-300)
"""),
        ("the distance instead of its square", """
def matchability(u_a, u_b, g_a, g_b, sigma):
    s = -(u_a[:, None] - u_b[None]).norm(dim=-1) / (2 * sigma**2)
    w = torch.exp(s) * (g_a[:, None] == g_b[None])
    return w / w.sum(1, keepdim=True).clamp_min(1e-300)
"""),
        ("NaN rows for a group absent from view b", """
def matchability(u_a, u_b, g_a, g_b, sigma):
    s = -((u_a[:, None] - u_b[None]) ** 2).sum(-1) / (2 * sigma**2)
    w = torch.exp(s) * (g_a[:, None] == g_b[None])
    return w / w.sum(1, keepdim=True)
"""),
    ],
    "ch40-ex2-solution": [
        ("<= instead of < (the tolerance itself counts)", """
def visible(u_a, u_b, g_a, g_b, eps):
    close = ((u_a[:, None] - u_b[None]).norm(dim=-1) <= eps) & (g_a[:, None] == g_b[None])
    return close.any(1), close.any(0)
"""),
        ("groups ignored", """
def visible(u_a, u_b, g_a, g_b, eps):
    close = (u_a[:, None] - u_b[None]).norm(dim=-1) < eps
    return close.any(1), close.any(0)
"""),
        ("v_a and v_b swapped", """
def visible(u_a, u_b, g_a, g_b, eps):
    close = ((u_a[:, None] - u_b[None]).norm(dim=-1) < eps) & (g_a[:, None] == g_b[None])
    return close.any(0), close.any(1)
"""),
        ("every pixel of a group that exists in the other view", """
def visible(u_a, u_b, g_a, g_b, eps):
    same = g_a[:, None] == g_b[None]
    return same.any(1), same.any(0)
"""),
    ],
    "ch40-ex3-solution": [
        ("nearest in pixels instead of surface coordinates", """
dx = (x_a[:, None] - x_b[None]).norm(dim=-1)
dx = torch.where(g_a[:, None] == g_b[None], dx, torch.full_like(dx, math.inf))
my_eq2 = float(epipolar_distance(x_a, x_b[dx.argmin(1)], F_ab).mean())
"""),
        ("groups ignored", """
j_star = (u_a[:, None] - u_b[None]).norm(dim=-1).argmin(1)
my_eq2 = float(epipolar_distance(x_a, x_b[j_star], F_ab).mean())
"""),
        ("the line of x' in view a (F transposed)", """
du = (u_a[:, None] - u_b[None]).norm(dim=-1)
du = torch.where(g_a[:, None] == g_b[None], du, torch.full_like(du, math.inf))
my_eq2 = float(epipolar_distance(x_a, x_b[du.argmin(1)], F_ab.T).mean())
"""),
        ("the algebraic error without the line normalisation", """
du = (u_a[:, None] - u_b[None]).norm(dim=-1)
du = torch.where(g_a[:, None] == g_b[None], du, torch.full_like(du, math.inf))
xb_h = torch.cat([x_b[du.argmin(1)], torch.ones(n, 1, dtype=x_b.dtype)], 1)
xa_h = torch.cat([x_a, torch.ones(n, 1, dtype=x_a.dtype)], 1)
my_eq2 = float(((xb_h @ F_ab) * xa_h).sum(1).abs().mean())
"""),
        ("the soft expected error of eq. 6 at the chapter's sigma", """
my_eq2 = float(dense.expected_pair_cost(u_a, u_b, sigma=0.05, x_a=x_a, x_b=x_b, F=F_ab,
                                        groups_a=g_a, groups_b=g_b)[0].mean())
"""),
    ],
}
