"""SelfPose3d training-step cost (chapter 50): one root-net step and one pose-net step.

- root step: eq. 2 (synthetic roots rendered into every view, unprojected into the space box,
  the root net, 3D Gaussian targets) + eq. 3 (the root volumes of the unaugmented views and of two
  augmented copies), backward, Adam;
- pose step (``"finetune"``, eq. 11): the cuboids of every proposal in two augmented copies, the
  pose net, soft-argmax, cross-affine-view projection and rendering, eq. 7 with the attention
  network, Hungarian-matched L1 with hard attention, backward, Adam.

Both from a heatmap bank (a frozen 2D network, as the CPU profiles). Then the pose net's V2V
forward + backward on a quick-size batch of cuboids with contiguous and with channels-last 3D
tensors (the layout the model uses), and their ratio. Sizes: the ``quick``
profile's (space 32 x 32 x 16, cuboids 16^3) on every device, and the ``full`` profile's (space
40 x 40 x 20, cuboids 64^3) on CUDA. Prints ms per step and the CPU / CUDA ratio. Usage:
``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_selfpose3d.py [--steps N] [--threads T]``.
"""

from __future__ import annotations

import argparse
import platform

import torch
from timing import mean_seconds

from mvbook.data.format import collate_samples
from mvbook.methods import selfpose3d as sp
from mvbook.train import to_device

IMAGE = {"quick": (192, 108), "full": (384, 216)}


def _batch(cfg: sp.Config, profile: str, frames: int, people: int = 3, views: int = 5,
           augmentations: int = 3) -> tuple[sp.SelfPose3dNet, dict]:
    """A model and one collated batch of ``frames`` frames with a random heatmap bank."""
    from mvbook.studio import make_rig

    g = torch.Generator().manual_seed(0)
    W, H = IMAGE[profile]
    cams = make_rig("panoptic", (W, H)).cameras
    P = cams.P.float()[:views]
    model = sp.SelfPose3dNet(cfg, (W, H), (0.0, 0.0, 800.0))
    w, h = model.heatmap_size
    J = cfg.num_joints
    T = sp.random_affines((frames, augmentations), (W, H), generator=g)
    T = torch.cat([torch.eye(3).expand(frames, 1, 3, 3), T], 1)[:, :, None].expand(
        -1, -1, views, 3, 3)
    centre = (torch.rand(frames, people, 1, 3, generator=g) - 0.5) * torch.tensor(
        [2000.0, 2000.0, 0.0]) + torch.tensor([0.0, 0.0, 900.0])
    X = centre + 300 * torch.randn(frames, people, J, 3, generator=g)
    uv = sp.project(P.expand(frames, -1, -1, -1), X.reshape(frames, people * J, 3))
    K = cfg.max_people
    props = torch.zeros(frames, K, 3)
    props[:, :people] = centre[:, :, 0]
    pvalid = torch.zeros(frames, K, dtype=torch.bool)
    pvalid[:, :people] = True
    samples = [{
        "images": torch.randint(0, 255, (views, 3, H, W), generator=g, dtype=torch.uint8),
        "P": P, "heat": torch.rand(augmentations + 1, views, J + 1, h, w, generator=g).half(),
        "T": T[i].contiguous(), "pseudo2d": uv[i].reshape(views, people, J, 2),
        "pseudo_valid": torch.ones(views, people, J, dtype=torch.bool),
        "joints3d": X[i], "joint_valid": torch.ones(people, J, dtype=torch.bool),
        "person_valid": torch.ones(people, dtype=torch.bool),
        "proposals": props[i], "proposal_valid": pvalid[i]} for i in range(frames)]
    return model, collate_samples(samples)


def bench(stage: str, profile: str, device: torch.device, frames: int, steps: int) -> float:
    cfg = sp.settings(profile).config
    model, batch = _batch(cfg, profile, frames)
    model.to(device).train()
    batch = to_device(batch, device)
    loss_fn = sp.make_loss(stage, cfg, generator=torch.Generator().manual_seed(0))
    params = [p for n, p in model.named_parameters()
              if n.startswith(("root_net",) if stage == "root" else ("pose_net", "attention"))]
    opt = torch.optim.Adam(params, lr=1e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(model, batch)
        loss.backward()
        opt.step()

    return mean_seconds(step, steps, device, warmup=1)


def bench_layout(device: torch.device, steps: int, cuboids: int = 6) -> dict[str, float]:
    """Seconds of one V2V forward + backward of the quick pose net on ``cuboids`` cuboids, per
    memory layout (the same weights and inputs)."""
    from mvbook.nn.v2v import V2VNet

    cfg = sp.settings("quick").config
    g = torch.Generator().manual_seed(0)
    n = cfg.cuboid_resolution
    x = torch.rand(cuboids, cfg.num_joints, n, n, n, generator=g).to(device)
    out = {}
    for layout in (torch.contiguous_format, torch.channels_last_3d):
        torch.manual_seed(0)
        net = V2VNet(cfg.num_joints, cfg.num_joints, cfg.pose_width, cfg.pose_levels,
                     norm=cfg.v2v_norm, front_kernel=3).to(device).to(memory_format=layout)
        xl = x.contiguous(memory_format=layout)

        def step(net=net, xl=xl):
            net.zero_grad(set_to_none=True)
            net(xl).square().mean().backward()

        out[str(layout).replace("torch.", "")] = mean_seconds(step, steps, device, warmup=2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"# bench_selfpose3d ({platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} CPU threads)")
    print("| step | sizes | frames/step | device | ms/step | cpu / this device |")
    print("|---|---|---|---|---|---|")
    cases = [("root", "quick", 2), ("finetune", "quick", 1), ("root", "full", 4),
             ("finetune", "full", 1)]
    for stage, profile, frames in cases:
        cpu_ms = None
        for dev in devices:
            if profile == "full" and dev.type == "cpu":
                continue  # the paper's 64^3 cuboids: minutes per step on a CPU
            ms = 1e3 * bench(stage, profile, dev, frames, args.steps)
            cpu_ms = ms if dev.type == "cpu" else cpu_ms
            ratio = f"{cpu_ms / ms:.1f}" if cpu_ms else "-"
            name = "root (eqs. 2-3)" if stage == "root" else "pose (eq. 11)"
            print(f"| {name} | {profile} | {frames} | {dev.type} | {ms:.1f} | {ratio} |",
                  flush=True)
    print("\n| V2V pose net, 6 cuboids of 16^3, forward + backward | device | contiguous ms "
          "| channels-last ms | contiguous / channels-last |")
    print("|---|---|---|---|---|")
    for dev in devices:
        t = bench_layout(dev, max(args.steps, 5))
        a, b = t["contiguous_format"], t["channels_last_3d"]
        print(f"| quick sizes | {dev.type} | {1e3 * a:.1f} | {1e3 * b:.1f} | {a / b:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
