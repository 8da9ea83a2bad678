"""Export a run's net for serving, as a Hugging Face checkpoint directory:

    python -m scaletrain.export <checkpoint file | sharded checkpoint dir | run dir> --out DIR

writes ``config.json``, the weights as ``*.safetensors`` shards (at most
``--max-shard-size`` each, with their index) and, where the run's data was tokenized with
BPE, the tokenizer's files, so that ``AutoModelForCausalLM.from_pretrained(DIR)`` and
``AutoTokenizer.from_pretrained(DIR)`` (and servers built on transformers' format, such as
vLLM) load it offline. A run directory means its ``checkpoints/last.ckpt``; a sharded
checkpoint (fsdp, model_sharded, pipeline) is read on this one process, the optimizer's
state left out. The directory appears complete or not at all.

The net must be a transformers model (``model=hf_causal_lm``, or a net of one's own that
holds one): scaletrain's built-in GPT is an architecture of its own, which transformers
cannot load.
"""

import argparse
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException
from torch import nn

from scaletrain.checkpoint.contents import LAST
from scaletrain.checkpoint.export import checkpoint_weights, write_directory
from scaletrain.data.shards import ShardError, read_manifest
from scaletrain.nets.build import build_net
from scaletrain.reporting.record import checkpoint_run_dir, recorded_config

CHECKPOINT_DIR = "checkpoints"


class ExportError(ValueError):
    """What keeps a run from being exported; the message is one line."""


def checkpoint_of(source: Path) -> Path:
    """The checkpoint ``source`` names: itself, or a run directory's last one."""
    if not source.exists():
        raise ExportError(f"{source}: no such file or directory")
    if (source / CHECKPOINT_DIR).is_dir():
        last = source / CHECKPOINT_DIR / LAST
        if not last.exists():
            raise ExportError(f"{source}: the run has saved no {CHECKPOINT_DIR}/{LAST} yet")
        return last
    return source


def transformers_part(net: nn.Module) -> tuple[str, Any]:
    """The submodule of ``net`` (or ``net`` itself) that is a transformers model, and its
    name."""
    try:
        from transformers import PreTrainedModel
    except ModuleNotFoundError:
        raise ExportError("export needs transformers, the optional extra 'hf'") from None
    for name, module in net.named_modules():
        if isinstance(module, PreTrainedModel):
            return name, module
    raise ExportError(
        f"the run's net, {type(net).__module__}.{type(net).__name__}, is not a Hugging Face "
        "model, so transformers cannot load it; train model=hf_causal_lm (a Llama, Qwen2, "
        "... from transformers) for a net that exports"
    )


def load_model(checkpoint: Path) -> Any:
    """The transformers model of ``checkpoint``, holding its weights."""
    try:
        weights, hyper_parameters = checkpoint_weights(checkpoint)
    except (OSError, RuntimeError, ValueError) as error:
        raise ExportError(" ".join(str(error).split())) from None
    if "net" not in hyper_parameters:
        raise ExportError(f"{checkpoint}: not a scaletrain checkpoint (no net in its settings)")
    with torch.device("meta"):  # the checkpoint's tensors become the parameters
        net = build_net(hyper_parameters["net"])
    name, model = transformers_part(net)
    prefix = f"net.{name}." if name else "net."
    state = {key.removeprefix(prefix): value for key, value in weights.items()}
    model.load_state_dict(
        {key: value for key, value in state.items() if key in model.state_dict()},
        strict=True,
        assign=True,
    )
    model.tie_weights()
    return model


def tokenizer_of(checkpoint: Path) -> tuple[Any, str]:
    """The run's tokenizer as transformers' fast tokenizer (None where the run's data is
    not BPE tokens), and what was found, in words."""
    run_config = recorded_config(checkpoint_run_dir(checkpoint))
    try:
        directory = OmegaConf.select(run_config, "data.dir") if run_config else None
    except OmegaConfBaseException:
        directory = None
    if directory is None:
        return None, "no tokenizer: the run's data is not token shards"
    try:
        manifest = read_manifest(directory)
    except (OSError, ShardError):
        return None, f"no tokenizer: the run's data.dir={directory} is not readable from here"
    if manifest.tokenizer_path is None:
        return None, f"no tokenizer: the run's data is {manifest.tokenizer} (no tokenizer file)"
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(manifest.tokenizer_path))
    end = tokenizer.convert_ids_to_tokens(int(manifest.raw["end_of_document"]))
    tokenizer.eos_token = tokenizer.bos_token = end
    return tokenizer, f"tokenizer of {directory}"


def export(source: Path, out: Path, force: bool = False, max_shard_size: str = "5GB") -> str:
    """Write the export of ``source`` into ``out``; what was written, in words."""
    max_bytes = shard_size(max_shard_size)
    checkpoint = checkpoint_of(source)
    model = load_model(checkpoint)
    tokenizer, found = tokenizer_of(checkpoint)

    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # one line says what was written

    def write(directory: Path) -> None:
        model.save_pretrained(directory, max_shard_size=max_bytes)
        if tokenizer is not None:
            tokenizer.save_pretrained(directory)

    try:
        write_directory(out, write, force)
    except FileExistsError as error:
        raise ExportError(str(error)) from None
    count = sum(p.numel() for p in model.parameters())
    return f"{out}: {type(model).__name__}, {count:,} parameters, from {checkpoint}; {found}"


class Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line, like every scaletrain error."""

    def error(self, message: str) -> None:
        print(f"error: {message}; see python -m scaletrain.export --help", file=sys.stderr)
        sys.exit(2)


def shard_size(size: str) -> int:
    """``--max-shard-size`` in bytes, as transformers reads it (``5GB``, ``500MB``)."""
    from transformers.utils.hub import convert_file_size_to_int

    try:
        return convert_file_size_to_int(size)
    except ValueError:
        raise ExportError(f"--max-shard-size {size}: give a size such as 5GB or 500MB") from None


def main(argv: list[str] | None = None) -> None:
    parser = Parser(
        prog="python -m scaletrain.export",
        description=__doc__.split("\n\n")[0].rstrip(":"),
    )
    parser.add_argument(
        "source", type=Path, help="a checkpoint file, a sharded checkpoint directory or a run"
    )
    parser.add_argument("--out", type=Path, required=True, help="the directory to write")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.add_argument(
        "--max-shard-size", default="5GB", help="the largest weights file (default: 5GB)"
    )
    args = parser.parse_args(argv)
    try:
        print(export(args.source, args.out, args.force, args.max_shard_size))
    except ExportError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except (OSError, RuntimeError) as error:  # a full disk, say: --out is left as it was
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(
            f"error: writing {args.out} failed ({reason}); nothing written there", file=sys.stderr
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
