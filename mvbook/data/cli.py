"""``mvbook data``: get, convert and check datasets.

::

    mvbook data list
    mvbook data fetch   DATASET --raw RAW [options]      download (public sets) / explain (gated)
    mvbook data convert DATASET --raw RAW --out OUT [options]
    mvbook data check   OUT                             verify a converted folder
    mvbook data check   RAW --dataset DATASET           check a raw folder: what is missing, how to get it

DATASET is one of panoptic, shelf, campus, h36m, mpi_inf_3dhp. See docs/datasets.md.

Exit status: 0 done; 1 a check found problems; 2 an error a user can fix (a missing or
damaged file, a folder in the way, a failed download): one line from the command line's
handler (:func:`mvbook.cli.handle_errors`), or from :func:`main_for_dataset` for the
``data_scripts``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mvbook.data.common import parse_image_size
from mvbook.data.download import DownloadError, verify_against_ledger
from mvbook.data.format import check_output_folder
from mvbook.data.spec import MANIFEST
from mvbook.data.verify import verify_dataset

DATASET_NAMES = ("panoptic", "shelf", "campus", "h36m", "mpi_inf_3dhp")

SUMMARY = {
    "panoptic": "CMU Panoptic (public HTTP, non-commercial research). 14 VoxelPose sequences x 5 "
    "HD views ~100-200 GB raw; converted 960x540 ~160 GB (interval 3/12).",
    "shelf": "Shelf (public archive 2.6 GB, research use). Converted eval range ~0.9 GB.",
    "campus": "Campus (public archive ~1 GB, research use). Converted eval ranges ~0.2 GB.",
    "h36m": "Human3.6M (gated: vision.imar.ro/human3.6m, academic licence). ~70 GB raw; converted "
    "4 views 500x500 every 5th/64th frame (~80k samples) ~240 GB, ~63 GB at 256x256.",
    "mpi_inf_3dhp": "MPI-INF-3DHP (gated: vcai.mpi-inf.mpg.de/3dhp-dataset, non-commercial). "
    "~25-45 GB raw (8 cams); converted 512x512 every 10th frame ~70 GB.",
}


def _module(name: str):
    if name == "panoptic":
        from mvbook.data import panoptic as m
    elif name in ("shelf", "campus"):
        from mvbook.data import shelf_campus as m
    elif name == "h36m":
        from mvbook.data import h36m as m
    elif name == "mpi_inf_3dhp":
        from mvbook.data import mpi_inf_3dhp as m
    else:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}, got {name!r}")
    return m


# -- raw checks -------------------------------------------------------------------------------


def check_raw(name: str, raw: str | Path, **kw) -> list[str]:
    """Problems of a raw folder (missing files, ledger mismatches), each with how to fix it."""
    raw = Path(raw)
    problems: list[str] = []
    if not raw.exists():
        return [f"{raw} does not exist"]
    if name == "panoptic":
        from mvbook.data import panoptic as m

        seqs = kw.get("sequences") or [p.name for p in raw.iterdir() if p.is_dir()]
        if not seqs:
            problems.append(f"no sequence folders in {raw}")
        for seq in seqs:
            for _, rel in m.sequence_urls(seq, kw.get("cameras") or m.CAMERAS):
                if not (raw / rel).exists():
                    problems.append(f"missing {raw / rel}")
        if problems:
            problems.append(m.HOW_TO_GET)
    elif name in ("shelf", "campus"):
        from mvbook.data import shelf_campus as m

        info = m.DATASETS[name]
        folder = raw if (raw / "actorsGT.mat").exists() else raw / info["folder"]
        need = [folder / "actorsGT.mat"] + [
            folder / f"Camera{c}" for c in range(info["num_cameras"])
        ]
        problems += [f"missing {p}" for p in need if not p.exists()]
        if not (folder / info["calib_json"]).exists() and not (folder / "Calibration").exists():
            problems.append(
                f"missing calibration: {folder / info['calib_json']} or {folder / 'Calibration'}"
            )
        for c in range(info["num_cameras"]):
            for f in info["eval_frames"]:
                p = folder / info["image"].format(c=c, f=f)
                if (folder / f"Camera{c}").exists() and not p.exists():
                    problems.append(f"missing evaluation frame {p}")
                    break
        if problems:
            problems.append(m.how_to_get(name))
    elif name == "h36m":
        from mvbook.data import h36m as m

        if not (raw / "cameras.json").exists():
            problems.append(f"missing {raw / 'cameras.json'}")
        for s in kw.get("subjects") or m.TRAIN_SUBJECTS + m.TEST_SUBJECTS:
            d = raw / s
            if not d.exists():
                problems.append(f"missing subject folder {d}")
                continue
            stems = m.list_sequences(raw, s)
            if not stems:
                problems.append(f"missing poses {d / 'MyPoseFeatures' / 'D3_Positions'}")
            for stem in stems:
                for c in m.CAMERAS:
                    v = d / "Videos" / f"{stem}.{c}.mp4"
                    if not v.exists():
                        problems.append(f"missing video {v}")
        if problems:
            problems.append(m.HOW_TO_GET)
    elif name == "mpi_inf_3dhp":
        from mvbook.data import mpi_inf_3dhp as m

        for s in kw.get("subjects") or m.SUBJECTS:
            for q in m.SEQUENCES:
                d = raw / s / q
                for p in [d / "annot.mat", d / "camera.calibration"] + [
                    d / "imageSequence" / f"video_{c}.avi" for c in (kw.get("cameras") or m.CAMERAS)
                ]:
                    if not p.exists():
                        problems.append(f"missing {p}")
        if problems:
            problems.append(m.HOW_TO_GET)
    else:
        raise ValueError(f"dataset must be one of {DATASET_NAMES}")
    problems += verify_against_ledger(raw)
    return problems


# -- commands -----------------------------------------------------------------------------------


def _cmd_list(args: argparse.Namespace) -> int:
    for name in DATASET_NAMES:
        print(f"{name:14s} {SUMMARY[name]}")
    return 0


def _expand(args: argparse.Namespace, *names: str) -> None:
    for n in names:
        if getattr(args, n, None):
            setattr(args, n, str(Path(getattr(args, n)).expanduser()))


def _cmd_fetch(args: argparse.Namespace) -> int:
    _expand(args, "raw")
    name = args.dataset
    raw = Path(args.raw)
    if name == "panoptic":
        from mvbook.data import panoptic as m

        checks = _read_checksums(args.checksums)
        seqs = args.sequences or list(m.TRAIN_SEQUENCES + m.TEST_SEQUENCES)
        m.fetch(raw, seqs, args.cameras or m.CAMERAS, base_url=args.base_url or m.BASE_URL,
                checksums=checks, retries=args.retries, progress=not args.quiet,
                videos=not args.no_videos)  # fmt: skip
    elif name in ("shelf", "campus"):
        from mvbook.data import shelf_campus as m

        m.fetch(name, raw, archive_url=args.base_url, sha256=args.sha256, retries=args.retries,
                progress=not args.quiet,
                with_voxelpose_calibration=not args.no_voxelpose_calibration)  # fmt: skip
    else:
        m = _module(name)
        problems = check_raw(name, raw)
        print(m.__doc__)
        if problems:
            print("\nNot ready yet:")
            for p in problems[:30]:
                print(f"  - {p}")
            return 2
        print(f"\n{raw} has everything the converter needs.")
        return 0
    print(f"done: {raw}")
    return 0


def _read_checksums(path: str | None) -> dict[str, str] | None:
    if not path:
        return None
    from mvbook.data.download import read_ledger

    p = Path(path)
    entries = read_ledger(p.parent) if p.name == "SHA256SUMS" else {}
    if not entries:
        for line in p.read_text().splitlines():
            parts = line.split()
            if len(parts) == 2:
                entries[parts[1].lstrip("*")] = parts[0]
    return entries


def _cmd_convert(args: argparse.Namespace) -> int:
    """``data convert``; the dataset writer's refusals are phrased for the command line."""
    try:
        return _convert(args)
    except FileExistsError as err:
        if err.strerror is not None:  # the system's own error: the handler names its path
            raise
        raise FileExistsError(
            str(err).replace("pass overwrite=True (--overwrite on the command line)",
                             "pass --overwrite").replace("; overwrite only replaces",
                                                         "; --overwrite only replaces")
        ) from None


def _convert(args: argparse.Namespace) -> int:
    _expand(args, "raw", "out", "camera_file")
    check_output_folder(Path(args.out), args.overwrite)  # before reading any raw file
    name = args.dataset
    m = _module(name)
    size = parse_image_size(args.image_size, getattr(m, "DEFAULT_IMAGE_SIZE", (512, 512)))
    common = dict(overwrite=args.overwrite, progress=not args.quiet)
    if name == "panoptic":
        path = m.convert(
            args.raw, args.out, sequences=args.sequences or m.TRAIN_SEQUENCES + m.TEST_SEQUENCES,
            cameras=args.cameras or m.CAMERAS, interval=args.interval, image_size=size,
            num_joints=args.num_joints, max_frames=args.max_frames, **common,
        )  # fmt: skip
    elif name in ("shelf", "campus"):
        size = parse_image_size(args.image_size, m.DATASETS[name]["default_size"])
        path = m.convert(name, args.raw, args.out, frames=args.frames,
                         calibration=args.calibration, image_size=size, **common)  # fmt: skip
    elif name == "h36m":
        path = m.convert(
            args.raw, args.out, subjects=args.subjects or m.TRAIN_SUBJECTS + m.TEST_SUBJECTS,
            train_step=args.train_step, test_step=args.test_step, image_size=size,
            camera_file=args.camera_file, actions=args.actions,
            max_frames_per_sequence=args.max_frames, **common,
        )  # fmt: skip
    else:
        path = m.convert(
            args.raw, args.out, subjects=args.subjects or m.SUBJECTS,
            cameras=[int(c) for c in args.cameras] if args.cameras else m.CAMERAS,
            step=args.step, image_size=size, max_frames_per_sequence=args.max_frames, **common,
        )  # fmt: skip
    rep = verify_dataset(path, checksums=False, max_samples=2000)
    print(rep)
    print(f"\nconverted: {path}\nuse it in a chapter with the parameter  data = {str(path)!r}")
    return 0 if rep.ok else 1


def _cmd_check(args: argparse.Namespace) -> int:
    _expand(args, "path")
    path = Path(args.path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{path} is a file, not a dataset folder")
    if args.dataset and not (path / MANIFEST).exists():
        problems = check_raw(args.dataset, path)
        if problems:
            print(f"{path}: raw {args.dataset} data incomplete:")
            for p in problems:
                print(f"  - {p}")
            return 1
        print(f"{path}: raw {args.dataset} data complete; convert it with\n"
              f"  mvbook data convert {args.dataset} --raw {path} --out OUT")  # fmt: skip
        return 0
    rep = verify_dataset(
        path,
        checksums=not args.no_checksums,
        tolerance_px=args.tolerance,
        max_samples=args.max_samples,
    )
    print(rep)
    if not rep.ok and not (path / MANIFEST).exists():
        print(
            "\nTo create a dataset folder: `mvbook data list`, then `mvbook data fetch DATASET --raw "
            "RAW` and `mvbook data convert DATASET --raw RAW --out "
            f"{path}` (see docs/datasets.md). To check a raw folder: `mvbook data check RAW --dataset DATASET`."
        )
    return 0 if rep.ok else 1


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``mvbook data`` on the top-level subparsers."""
    p = subparsers.add_parser("data", help="get, convert and check datasets", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    sub = p.add_subparsers(dest="data_command", metavar="{list,fetch,convert,check}")
    sub.required = True
    _add_subcommands(sub, dataset=None)
    p.set_defaults(func=lambda a: p.print_help() or 2)
    return p


def _add_subcommands(sub, dataset: str | None) -> None:
    def ds_arg(q):
        if dataset is None:
            q.add_argument("dataset", choices=DATASET_NAMES)
        else:
            q.set_defaults(dataset=dataset)

    q = sub.add_parser("list", help="datasets, licences, disk space")
    q.set_defaults(func=_cmd_list)

    q = sub.add_parser("fetch", help="download a public dataset / explain how to get a gated one")
    ds_arg(q)
    q.add_argument("--raw", required=True, help="folder for the raw files (never modified)")
    q.add_argument("--sequences", nargs="+", help="panoptic: sequences (default: VoxelPose's 14)")
    q.add_argument(
        "--cameras", nargs="+", type=int, help="panoptic: HD camera nodes (3 6 12 13 23)"
    )
    q.add_argument("--no-videos", action="store_true", help="panoptic: calibration and poses only")
    q.add_argument("--base-url", help="override the source URL (mirror)")
    q.add_argument(
        "--checksums", help="file of '<sha256>  <relative path>' lines to verify against"
    )
    q.add_argument("--sha256", help="shelf/campus: expected sha256 of the archive")
    q.add_argument("--no-voxelpose-calibration", action="store_true",
                   help="shelf/campus: do not fetch VoxelPose's calibration JSON")  # fmt: skip
    q.add_argument("--retries", type=int, default=5)
    q.add_argument("--quiet", action="store_true")
    q.set_defaults(func=_cmd_fetch)

    q = sub.add_parser("convert", help="convert raw files into the common format")
    ds_arg(q)
    q.add_argument("--raw", required=True)
    q.add_argument("--out", required=True, help="new dataset folder (created atomically)")
    q.add_argument("--image-size", help="WxH of the stored views (K is updated)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.add_argument("--quiet", action="store_true")
    q.add_argument(
        "--max-frames", type=int, help="at most this many frames per sequence (trial runs)"
    )
    q.add_argument("--sequences", nargs="+", help="panoptic")
    q.add_argument("--cameras", nargs="+", help="panoptic: nodes; mpi_inf_3dhp: camera indices")
    q.add_argument(
        "--interval", type=int, help="panoptic: frame interval (default 3 train/12 test)"
    )
    q.add_argument("--num-joints", type=int, default=19, choices=(15, 19), help="panoptic")
    q.add_argument("--frames", default="eval", choices=("eval", "all"), help="shelf/campus")
    q.add_argument("--calibration", default="auto", choices=("auto", "json", "projection"),
                   help="shelf/campus: VoxelPose JSON or Calibration/P<c>.txt")  # fmt: skip
    q.add_argument("--subjects", nargs="+", help="h36m / mpi_inf_3dhp")
    q.add_argument("--train-step", type=int, default=5, help="h36m")
    q.add_argument("--test-step", type=int, default=64, help="h36m")
    q.add_argument("--camera-file", help="h36m: cameras JSON (default RAW/cameras.json)")
    q.add_argument("--actions", nargs="+", help="h36m: only these actions")
    q.add_argument("--step", type=int, default=10, help="mpi_inf_3dhp: frame step")
    q.set_defaults(func=_cmd_convert)

    q = sub.add_parser("check", help="verify a converted folder, or a raw folder with --dataset")
    q.add_argument("path")
    if dataset is None:
        q.add_argument("--dataset", choices=DATASET_NAMES, help="check PATH as a raw folder")
    else:  # PATH without manifest.json is checked as a raw folder of this dataset
        q.set_defaults(dataset=dataset)
    q.add_argument("--no-checksums", action="store_true")
    q.add_argument("--tolerance", type=float, default=1.0, help="reprojection tolerance, px")
    q.add_argument("--max-samples", type=int, help="check reprojection on at most N samples")
    q.set_defaults(func=_cmd_check)


def main_for_dataset(dataset: str, argv: list[str] | None = None) -> int:
    """Entry point of ``data_scripts/<dataset>.py``: ``fetch|convert|check`` for one dataset."""
    m = _module(dataset)
    parser = argparse.ArgumentParser(
        prog=f"data_scripts/{dataset}.py", description=m.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    sub = parser.add_subparsers(dest="data_command", metavar="{fetch,convert,check}")
    sub.required = True
    _add_subcommands(sub, dataset=dataset)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, OSError, DownloadError) as err:
        # The scripts run without ``mvbook``'s handler (mvbook.cli, a layer above this one):
        # the same one line and exit status for the errors this layer raises.
        print(f"{parser.prog}: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """``mvbook data ...`` without the command line's error handler: errors propagate
    (``mvbook.cli.main`` turns them into one line, exit status 2)."""
    parser = argparse.ArgumentParser(prog="mvbook")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
