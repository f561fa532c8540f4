"""Benchmark: the streaming dense epipolar operator against the materialised eq. 17.

For one view pair with ``n`` foreground pixels per view (24 body parts, UV in [0, 1], pixels in a
256 x 256 image, ``F`` of two Human3.6M-like cameras), it runs forward + backward of

(a) ``mvbook.dense.dense_error_materialized``: the paper's eq. 17 with the full ``n x n``
    matchability ``M`` and epipolar matrix ``E``, plain autograd;
(b) ``mvbook.dense.dense_epipolar_error``: the streaming operator (blocks of view-b pixels,
    online softmax, recomputation in backward),

each configuration in a fresh subprocess, and reports the growth of the process's peak memory
(``ru_maxrss`` after minus before the measured call; on CUDA ``torch.cuda.max_memory_allocated``
above the allocation before it), the best wall time of the repeats, and the largest absolute
differences between (a) and (b) in the error and in the gradients with respect to ``u_a`` and
``u_b``. (a) is skipped where its estimated peak (from the measured smaller size, scaled by
``n^2``) does not fit in 80% of the available memory. A second table times (b) for several block
sizes at the largest ``n`` (the default block was chosen from it).
Usage: ``OMP_NUM_THREADS=1 .venv/bin/python bench/bench_dense_epipolar.py [--sizes 1000 4000
16000] [--normalize paper symmetric] [--dtype float32] [--threads 1] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from mvbook.dense import DEFAULT_BLOCK, dense_epipolar_error, dense_error_materialized
from mvbook.geometry import Camera, fundamental_from_cameras

SIGMA, EPS, PARTS = 0.05, 0.01, 24


def make_pair(n: int, dtype: torch.dtype, device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """One synthetic view pair with ``n`` pixels per view (deterministic by seed)."""
    g = torch.Generator().manual_seed(seed)
    cams = Camera.look_at(torch.tensor([[3500.0, 300, 1500], [-200, 3600, 1700]]),
                          torch.tensor([0.0, 0, 900]), focal=300.0, image_size=(256, 256))
    F = fundamental_from_cameras(cams[0], cams[1])
    d = {
        "x_a": torch.rand(n, 2, generator=g) * 255, "x_b": torch.rand(n, 2, generator=g) * 255,
        "u_a": torch.rand(n, 2, generator=g), "u_b": torch.rand(n, 2, generator=g), "F": F,
    }
    d = {k: v.to(dtype=dtype, device=device) for k, v in d.items()}
    d["groups_a"] = torch.randint(0, PARTS, (n,), generator=g).to(device)
    d["groups_b"] = torch.randint(0, PARTS, (n,), generator=g).to(device)
    return d


def run_once(mode: str, d: dict[str, torch.Tensor], normalize: str, block: int):
    ua = d["u_a"].clone().requires_grad_()
    ub = d["u_b"].clone().requires_grad_()
    kw = {"sigma": SIGMA, "eps": EPS, "groups_a": d["groups_a"], "groups_b": d["groups_b"],
          "normalize": normalize}
    if mode == "naive":
        err = dense_error_materialized(ua, ub, x_a=d["x_a"], x_b=d["x_b"], F=d["F"], **kw)
    else:
        err = dense_epipolar_error(d["x_a"], ua, d["x_b"], ub, d["F"], block=block, **kw)
    err.backward()
    return err.detach(), ua.grad, ub.grad


def child(args: argparse.Namespace) -> int:
    """One configuration in this fresh process; prints a JSON line, saves the results."""
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    run_once(args.mode, make_pair(64, dtype, args.device), args.child_normalize, args.block)
    d = make_pair(args.n, dtype, args.device)
    sync()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    best, spent, out = float("inf"), 0.0, None
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        out = run_once(args.mode, d, args.child_normalize, args.block)
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
        if spent > 20:
            break
    peak = (torch.cuda.max_memory_allocated() if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    torch.save([t.cpu() for t in out], args.out)
    print(json.dumps({"seconds": best, "peak_bytes": peak - base}))
    return 0


def run_child(mode: str, n: int, normalize: str, block: int, args, tmp: Path) -> dict | None:
    out = tmp / f"{mode}-{n}-{normalize}-{block}.pt"
    cmd = [sys.executable, __file__, "--child", mode, "--n", str(n), "--child-normalize",
           normalize, "--block", str(block), "--out", str(out), "--dtype", args.dtype,
           "--threads", str(args.threads), "--device", args.device, "--repeats",
           str(args.repeats)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {mode} n={n} failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
        return None
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["tensors"] = torch.load(out, weights_only=True)
    return res


def available_bytes(device: str) -> int:
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info()
        return free
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def fmt_bytes(b: float) -> str:
    return f"{b / 2**30:.2f} GiB" if b >= 2**30 else f"{b / 2**20:.1f} MiB"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--normalize", nargs="+", default=["paper", "symmetric"],
                        choices=["paper", "symmetric"])
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--block", type=int, default=DEFAULT_BLOCK)
    parser.add_argument("--tune-blocks", type=int, nargs="*", default=[64, 128, 256, 512, 1024],
                        help="block sizes timed at the largest size (none: skip)")
    parser.add_argument("--repeats", type=int, default=3, help="best of (stops after 20 s)")
    parser.add_argument("--child", choices=["naive", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-normalize", default="paper", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        return child(args)

    print(f"dense epipolar error, forward + backward, one view pair, {PARTS} parts, "
          f"sigma {SIGMA}, eps {EPS}, {args.dtype}, device {args.device}, torch "
          f"{torch.__version__} ({args.threads} thread(s)), {platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(f"streaming block {args.block}; memory = growth of the peak in a fresh process\n")
    header = ("| n per view | normalize | naive peak | streaming peak | naive/streaming memory "
              "| naive time | streaming time | naive/streaming time | max abs diff error "
              "| max abs diff grad |")
    print(header)
    print("|" + "---|" * 10)
    ok = True
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for normalize in args.normalize:
            per_pair = None  # naive peak bytes per n^2, from the last size that ran
            for n in sorted(args.sizes):
                s = run_child("stream", n, normalize, args.block, args, tmp)
                if s is None:
                    ok = False
                    continue
                need = None if per_pair is None else per_pair * n * n
                avail = available_bytes(args.device)
                if need is not None and need > 0.8 * avail:
                    a = None
                    note = f"does not fit (needs ~{fmt_bytes(need)}, {fmt_bytes(avail)} free)"
                else:
                    a = run_child("naive", n, normalize, args.block, args, tmp)
                    note = "failed" if a is None else ""
                row = [f"{n:,}", normalize]
                if a is None:
                    row += [note, fmt_bytes(s["peak_bytes"]), "-", "-",
                            f"{s['seconds']:.3f} s", "-", "-", "-"]
                else:
                    per_pair = a["peak_bytes"] / (n * n)
                    de = (a["tensors"][0] - s["tensors"][0]).abs().max().item()
                    dg = max((x - y).abs().max().item()
                             for x, y in zip(a["tensors"][1:], s["tensors"][1:]))
                    mag = a["tensors"][0].abs().max().item()
                    gmag = max(t.abs().max().item() for t in a["tensors"][1:])
                    ok &= de <= 1e-3 * mag + 1e-6 and dg <= 1e-3 * gmag + 1e-6
                    row += [fmt_bytes(a["peak_bytes"]), fmt_bytes(s["peak_bytes"]),
                            f"{a['peak_bytes'] / max(s['peak_bytes'], 1):.1f}x",
                            f"{a['seconds']:.3f} s", f"{s['seconds']:.3f} s",
                            f"{a['seconds'] / s['seconds']:.2f}x",
                            f"{de:.1e} (of {mag:.3g})", f"{dg:.1e} (of {gmag:.2g})"]
                print("| " + " | ".join(row) + " |", flush=True)
        if args.tune_blocks:
            n = max(args.sizes)
            print(f"\nstreaming operator at n = {n:,}, {args.normalize[0]} form, by block size:\n")
            print("| block | peak | time |")
            print("|---|---|---|")
            for block in args.tune_blocks:
                s = run_child("stream", n, args.normalize[0], block, args, tmp)
                if s is not None:
                    print(f"| {block} | {fmt_bytes(s['peak_bytes'])} | {s['seconds']:.3f} s |",
                          flush=True)
    print("\nresults agree" if ok else "\nRESULTS DISAGREE (or a run failed)")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
