"""``mvbook zoo``: list, train and verify the pretrained studio models.

    mvbook zoo list
    mvbook zoo train pose2d --profile quick --device auto --out DIR
    mvbook zoo verify            # every shipped model
"""

from __future__ import annotations

import argparse
import sys


def _list(args: argparse.Namespace) -> int:
    from mvbook.zoo import MODELS, ZooError, card, recipe

    for name in MODELS:
        rec = recipe(name, args.profile)
        try:
            c = card(name, args.profile, folder=args.folder)
            m = c["held_out"]["metrics"]
            state = (f"trained {c['created']} on {c['device']} in {c['train_seconds']:.0f} s, "
                     + ", ".join(f"{k} {v:.2f}" for k, v in m.items() if k != "crops"))
            if c["recipe"] != rec.digest():
                state = "OUT OF DATE (recipe changed): " + state
        except ZooError:
            state = "not trained"
        print(f"{name} ({args.profile}, recipe {rec.digest()}): {rec.description}\n  {state}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from mvbook.zoo import train_model

    c = train_model(args.name, args.profile, args.out, device=args.device,
                    overwrite=args.overwrite, progress=not args.quiet)
    print(f"{args.name} ({args.profile}): {c['train_seconds']:.0f} s on {c['device']}; "
          f"held-out {c['held_out']['metrics']}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from mvbook.zoo import MODELS, ZooError, verify

    names = [args.name] if args.name else list(MODELS)
    failed = 0
    for name in names:
        try:
            result = verify(name, args.profile, folder=args.folder, progress=not args.quiet)
        except ZooError as err:
            print(f"{name}: FAILED: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{name} ({args.profile}): OK, " + ", ".join(
            f"{k} {b:.3f} (card {a:.3f})" for k, (a, b) in result.items()))
    return 1 if failed else 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``zoo`` subcommand to the ``mvbook`` command line."""
    from mvbook.zoo import MODELS

    parser = subparsers.add_parser("zoo", help="pretrained studio models: list, train, verify",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="zoo_command", metavar="ACTION")
    sub.required = True
    p = sub.add_parser("list", help="the zoo's models and their cards")
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    p.add_argument("--folder", default=None, help="where the weights are (default: shipped/cache)")
    p.set_defaults(func=_list)
    p = sub.add_parser("train", help="train a model from its recipe (resumable)")
    p.add_argument("name", choices=MODELS)
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    p.add_argument("--out", default=None,
                   help="folder for weights, card and checkpoints (default: <cache>/zoo/<profile>)")
    p.add_argument("--overwrite", action="store_true", help="replace existing weights in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)
    p = sub.add_parser("verify", help="check weights and re-measure the cards' held-out metrics")
    p.add_argument("name", nargs="?", choices=MODELS, default=None)
    p.add_argument("--profile", choices=("smoke", "quick", "full"), default="quick")
    p.add_argument("--folder", default=None, help="where the weights are (default: shipped/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_verify)
    return parser
