"""``mvbook studio``: build the synthetic multiview studio datasets and show where they are.

    mvbook studio build --profile quick --scene single
    mvbook studio info --profile smoke

Errors a user can fix (a cache folder that is a file, a device the machine lacks) are one
line and exit status 2, from the command line's handler (:func:`mvbook.cli.handle_errors`).
"""

from __future__ import annotations

import argparse
import json
import time


def _device(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N (the form is checked here, availability when
    the build starts)."""
    from mvbook.runtime import parse_device

    try:
        parse_device(text, "--device")
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _build(args: argparse.Namespace) -> int:
    from mvbook.studio.build import build_studio

    scenes = ("single", "multi") if args.scene == "all" else (args.scene,)
    for scene in scenes:
        t0 = time.perf_counter()
        root = build_studio(args.profile, scene, args.seed, args.cache_dir, not args.quiet,
                            device=args.device, rebuild=args.rebuild, verify=True)
        print(f"{scene}: {root} ({time.perf_counter() - t0:.1f} s)")
    return 0


def _info(args: argparse.Namespace) -> int:
    from mvbook.data.format import read_manifest
    from mvbook.studio.build import dataset_path
    from mvbook.studio.scenes import profile_config

    scenes = ("single", "multi") if args.scene == "all" else (args.scene,)
    for scene in scenes:
        cfg = profile_config(args.profile, scene, args.seed)
        root = dataset_path(cfg, args.profile, args.cache_dir)
        built = (root / "manifest.json").exists()
        print(f"{scene} ({args.profile}): {root} [{'built' if built else 'not built'}]")
        print("  " + json.dumps(cfg.to_dict()))
        if built:
            m = read_manifest(root)
            print(f"  {m['num_samples']} samples, {m['num_views']} views, images "
                  f"{m['image_size'][0]}x{m['image_size'][1]}, subjects {m['vocab']['subject']}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``studio`` subcommand to the ``mvbook`` command line."""
    parser = subparsers.add_parser("studio", help="build the synthetic multiview studio datasets",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="studio_command", metavar="ACTION")
    sub.required = True
    for name, func, hlp in (("build", _build, "build (or find in the cache) a studio dataset"),
                            ("info", _info, "show the configuration and cache folder")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
        p.add_argument("--scene", choices=("single", "multi", "all"), default="single")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--cache-dir", default=None,
                       help="cache folder (default $MVBOOK_CACHE or ~/.cache/mvbook)")
        if name == "build":
            p.add_argument("--device", default=None, type=_device,
                           help="cpu, cuda or auto (default: auto for full, else cpu)")
            p.add_argument("--rebuild", action="store_true", help="build again even if cached")
            p.add_argument("--quiet", action="store_true", help="no progress bar")
        p.set_defaults(func=func)
    return parser
