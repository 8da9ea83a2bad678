"""Sample text from a language model's checkpoint:
``python -m scaletrain.generate ckpt_path=<checkpoint or run dir> prompt=... [max_new_tokens=200]
[temperature=1.0] [top_k=null] [seed=42]``.

resolve the checkpoint -> the training run's config (model and data) -> the data's codec
-> the net with the checkpoint's weights -> sample -> print the prompt and its sequel.
The checkpoint may be a file, a sharded directory (consolidated into a scratch file
first), or a run directory (its ``checkpoints/last.ckpt``). Nothing is written.
"""

import tempfile
from pathlib import Path

import hydra
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from scaletrain.checkpoint.consolidate import is_sharded_checkpoint, loadable_checkpoint
from scaletrain.checkpoint.contents import checkpoint_problems, resolve_last
from scaletrain.cli import runner
from scaletrain.cli.errors import user_errors
from scaletrain.config import CONFIG_DIR
from scaletrain.errors import ConfigError
from scaletrain.models.language_model import LanguageModel
from scaletrain.models.sampling import sample, sampling_problems
from scaletrain.reporting.record import recorded_config
from scaletrain.runtime.quiet import set_verbosity

CHECKPOINTS = "checkpoints"  # a run directory's checkpoint folder


def resolve_checkpoint(ckpt_path: str) -> Path:
    """The checkpoint ``ckpt_path`` names: itself, or a run directory's last.ckpt."""
    path = Path(ckpt_path)
    if not path.exists():
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no such file or directory; give a checkpoint written by "
            "train, or its run directory"
        )
    if path.is_dir() and not is_sharded_checkpoint(path) and (path / CHECKPOINTS).is_dir():
        last = resolve_last("last", path / CHECKPOINTS)
        if last is None:
            raise ConfigError(f"ckpt_path={ckpt_path}: the run has saved no last.ckpt yet")
        return Path(last)
    return path


def run_config(ckpt_path: str, checkpoint: Path) -> DictConfig:
    """The config of the training run whose ``checkpoints/`` holds ``checkpoint``."""
    run_dir = checkpoint.resolve().parent.parent
    cfg = recorded_config(run_dir)
    if cfg is None:
        raise ConfigError(
            f"ckpt_path={ckpt_path}: no training run recorded in {run_dir} (.hydra/config.yaml); "
            "give a checkpoint inside the checkpoints/ of the run that wrote it"
        )
    model_class = get_class(cfg.model._target_)
    if not issubclass(model_class, LanguageModel):
        raise ConfigError(
            f"ckpt_path={ckpt_path}: a checkpoint of {model_class.__name__}, not of a language "
            "model; generate samples from language models (model=gpt)"
        )
    return cfg


def load_weights(model: LanguageModel, checkpoint: Path) -> None:
    """Load ``checkpoint`` (a file, or a sharded directory) into ``model``."""
    problems = checkpoint_problems(str(checkpoint), model)
    if problems:
        raise ConfigError(problems)
    with tempfile.TemporaryDirectory() as scratch:
        # a sharded one is consolidated into a scratch file: no process group needed
        file = loadable_checkpoint(str(checkpoint), False, Path(scratch))
        state = torch.load(file, map_location="cpu", weights_only=True)["state_dict"]
    model.load_state_dict(state)


def device_problems(device: object) -> list[str]:
    try:
        kind = torch.device(str(device)).type
    except RuntimeError:
        return [f"device={device}: not a device; valid: cpu, cuda, cuda:<index>"]
    if kind == "cuda" and not torch.cuda.is_available():
        return [f"device={device}: this machine has no CUDA device; valid: cpu"]
    return []


def generate(cfg: DictConfig) -> str:
    """The prompt followed by the sampled text, as ``cfg`` asks."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(
            "ckpt_path: required; give a checkpoint written by train (a file or a sharded "
            "directory) or its run directory"
        )
    problems = sampling_problems(cfg.max_new_tokens, cfg.temperature, cfg.top_k)
    problems += device_problems(cfg.device)
    if not isinstance(cfg.seed, int):
        problems.append(f"seed={cfg.seed}: must be an integer")
    if problems:
        raise ConfigError(problems)
    checkpoint = resolve_checkpoint(str(cfg.ckpt_path))
    run_cfg = run_config(str(cfg.ckpt_path), checkpoint)
    datamodule = instantiate(run_cfg.data)
    if not callable(getattr(datamodule, "codec", None)):
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path}: its run's data ({run_cfg.data._target_}) has no codec "
            "to turn text into tokens; generate needs text data (data=text)"
        )
    codec = datamodule.codec()
    prompt = codec.encode("" if cfg.prompt is None else str(cfg.prompt))
    if not prompt:
        raise ConfigError(
            f"prompt={cfg.prompt!r}: encodes to no tokens; give at least one character"
        )
    model = instantiate(run_cfg.model)
    load_weights(model, checkpoint)
    net = model.net.to(cfg.device)
    generator = torch.Generator(cfg.device).manual_seed(cfg.seed)
    tokens = sample(
        net,
        torch.tensor(prompt, device=cfg.device),
        cfg.max_new_tokens,
        cfg.temperature,
        cfg.top_k,
        generator,
    )
    return codec.decode(tokens.tolist())


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="generate")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: print the sample, or one line per problem."""
    set_verbosity(cfg.verbose)
    with user_errors():
        print(generate(cfg), flush=True)


run = runner.command_line("generate", main)

if __name__ == "__main__":
    run()
