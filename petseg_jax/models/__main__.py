"""Model archives: pack a trained model with its card, install it under a name.

    python -m petseg_jax.models pack WORKDIR_OR_EXPORT --out MODEL.zip
    python -m petseg_jax.models install MODEL.zip [--sha256 HEX] [--name NAME]
    python -m petseg_jax.models list

``pack`` writes ``MODEL.zip`` (the model, its best checkpoint or its export, and ``card.json``:
training tracers, doses, AC/NAC, centers, spacing, labels, software version, evaluation Dice) and
``MODEL.zip.sha256``. ``install`` checks the archive's SHA-256 against ``--sha256`` or the sidecar
file beside it, refuses a tampered archive or a member path that escapes, and installs into
``$PETSEG_MODELS`` (default ``~/.local/share/petseg_jax/models``) as ``NAME`` (default: the
archive's name without ``.zip``); ``python -m petseg_jax.predict --model NAME`` then finds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from petseg_jax.console import entry_point
from petseg_jax.inference import installed
from petseg_jax.inference.spec import SpecError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m petseg_jax.models", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack", help="write MODEL.zip and MODEL.zip.sha256")
    pack.add_argument("folder", help="training workdir or export folder")
    pack.add_argument("--out", required=True, help="archive to write (MODEL.zip)")
    inst = sub.add_parser("install", help="verify and install an archive")
    inst.add_argument("archive")
    inst.add_argument("--sha256", help="expected hex digest (default: the .sha256 file beside)")
    inst.add_argument("--name", help="install name (default: the archive's name)")
    sub.add_parser("list", help="installed models and their cards")
    args = parser.parse_args(argv)
    from petseg_jax.training import archive  # orbax: only for the archive commands

    try:
        if args.command == "pack":
            out, digest = archive.pack(args.folder, args.out)
            print(f"{out}\nsha256 {digest}")
        elif args.command == "install":
            print(archive.install(args.archive, args.sha256, args.name))
        else:
            root = installed.models_dir()
            for folder in sorted(root.iterdir()) if root.is_dir() else []:
                card = installed.read_card(folder)
                if card is not None:
                    print(folder.name, json.dumps({"training_data": card["training_data"],
                                                   "evaluation": card["evaluation"].get(
                                                       "mean_dice")}))
    except (archive.ArchiveError, SpecError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


cli = entry_point(main)

if __name__ == "__main__":
    sys.exit(main())
