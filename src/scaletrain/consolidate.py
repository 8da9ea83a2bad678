"""Turn a distributed (sharded) checkpoint into one file that loads without any
distributed setup:  ``python -m scaletrain.consolidate <run>/checkpoints/last.ckpt [OUT]``.

The file is an ordinary Lightning checkpoint: ``torch.load``,
``LightningModule.load_from_checkpoint``, ``scaletrain.eval`` and ``ckpt_path=`` resumes
under any strategy read it.
"""

import argparse
import sys
from pathlib import Path

from scaletrain.checkpoint.consolidate import consolidate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a sharded checkpoint directory")
    parser.add_argument(
        "output",
        type=Path,
        nargs="?",
        help="the file to write (default: <name>-full.ckpt beside it)",
    )
    args = parser.parse_args(argv)
    output = args.output or args.checkpoint.with_name(f"{args.checkpoint.stem}-full.ckpt")
    try:
        consolidate(args.checkpoint, output)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(output)


if __name__ == "__main__":
    main()
