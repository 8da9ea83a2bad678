"""Prepare a corpus of text files for training with ``data=tokens``:

    python -m scaletrain.prepare <text files or folders> --out <dir> [--tokenizer bpe|bytes|<dir>]

The inputs are text files (each a document) or rows of documents: JSON Lines
(``.jsonl``, ``.jsonl.gz``) and Parquet (``.parquet``), the text in ``--text-field``.

trains a byte-level BPE tokenizer on the text (or keeps its UTF-8 bytes, or encodes with
the tokenizer.json of a directory, such as a Hugging Face checkpoint's), encodes every
file, and writes token shards for train, val and test with a ``manifest.json``
(:mod:`scaletrain.data.preparation` says how files are found and split,
:mod:`scaletrain.data.shards` what is written). A second run over the same inputs and
settings finds the data up to date and writes nothing.
"""

import argparse
import sys
from pathlib import Path

from scaletrain.data.preparation import Prepared, PrepareError, PrepareSettings, prepare
from scaletrain.data.shards import ShardError

DEFAULTS = PrepareSettings()


class Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, like every scaletrain error."""

    def error(self, message: str) -> None:
        print(f"error: {message}; see python -m scaletrain.prepare --help", file=sys.stderr)
        sys.exit(2)


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = Parser(
        prog="python -m scaletrain.prepare",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        help="text files, .jsonl, .jsonl.gz and .parquet files, and folders searched recursively",
    )
    parser.add_argument("--out", required=True, type=Path, help="the folder to write into")
    parser.add_argument(
        "--tokenizer",
        default=DEFAULTS.tokenizer,
        help="bpe (trained on the corpus), bytes, or a directory holding a Hugging Face "
        "tokenizer.json: a checkpoint's, to fine-tune it (default: bpe)",
    )
    parser.add_argument(
        "--vocab-size", type=int, help="BPE vocabulary size (default: 4096; bytes: 256)"
    )
    parser.add_argument("--val-fraction", type=float, default=DEFAULTS.val_fraction)
    parser.add_argument("--test-fraction", type=float, default=DEFAULTS.test_fraction)
    parser.add_argument(
        "--shard-tokens", type=int, default=DEFAULTS.shard_tokens, help="tokens per shard file"
    )
    parser.add_argument(
        "--chunk-tokens",
        type=int,
        help="tokens per chunk of the stream assigned to a split (default: 65536, or fewer "
        "for a corpus under 16 MiB)",
    )
    parser.add_argument("--seed", type=int, default=DEFAULTS.seed, help="picks the split")
    parser.add_argument(
        "--glob", default=DEFAULTS.glob, help="the files of folders to use, e.g. '*.txt'"
    )
    parser.add_argument(
        "--text-field",
        default=DEFAULTS.text_field,
        help="the field (JSON Lines) or column (Parquet) that holds each row's text",
    )
    parser.add_argument(
        "--force", action="store_true", help="replace data --out holds from other settings"
    )
    return parser.parse_args(argv)


def report(prepared: Prepared, out: Path) -> None:
    manifest = prepared.manifest
    splits = manifest["splits"]
    counts = ", ".join(
        f"{name} {split['tokens']:,} tokens ({len(split['shards'])} shard(s))"
        for name, split in splits.items()
    )
    print(f"{manifest['tokenizer']}, vocabulary {manifest['vocab_size']:,}: {counts}")
    print(f"prepared {out} in {prepared.seconds:.1f} s; train with: data=tokens data.dir={out}")


def stop(progress) -> None:
    if progress.live.is_started:
        progress.stop()


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    tokenizer = args.tokenizer
    vocab_size = args.vocab_size or (256 if tokenizer == "bytes" else DEFAULTS.vocab_size)
    settings = PrepareSettings(
        tokenizer=tokenizer,
        vocab_size=vocab_size,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        shard_tokens=args.shard_tokens,
        chunk_tokens=args.chunk_tokens,
        seed=args.seed,
        glob=args.glob,
        text_field=args.text_field,
    )
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    progress = Progress(
        TextColumn("{task.description:<12}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )

    def on_start(files: list[Path], skipped: list[Path]) -> None:
        note = f" (skipped {len(skipped)} that are not UTF-8 text)" if skipped else ""
        print(f"{len(files)} file(s){note} -> {args.out}")
        progress.start()  # only once there is work to show

    try:
        prepared = prepare(args.inputs, args.out, settings, args.force, progress, on_start)
    except (PrepareError, ShardError) as error:
        stop(progress)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # unreadable input, a full disk: nothing half-written is left
        stop(progress)
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    stop(progress)
    if prepared.up_to_date:
        print(f"{args.out} is up to date: nothing written")
        return
    report(prepared, args.out)


if __name__ == "__main__":
    main()
