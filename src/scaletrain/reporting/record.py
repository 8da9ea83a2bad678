"""The record of a run directory: what each attempt at the run was told to do.

The first attempt's composed config, Hydra config and overrides are ``.hydra/``, as
Hydra writes them; each later attempt in the same directory (a resume) adds
``.hydra/attempt-<n>/``, so the record of earlier attempts is never overwritten. An
attempt is recorded only once its preflight has passed: a command that fails its checks
leaves the run directory as it found it, and a new run directory that never got that
far is removed.
"""

import contextlib
import shutil
from pathlib import Path
from typing import Any

import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from scaletrain.checkpoint.atomic import write_file_atomically
from scaletrain.runtime.ranks import is_global_rank_zero

RECORD_DIR = ".hydra"
FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def attempt_dirs(run_dir: Path) -> list[Path]:
    """The recorded attempts of ``run_dir``, oldest first."""
    first = run_dir / RECORD_DIR
    if not (first / "config.yaml").is_file():
        return []
    later = [path for path in first.glob("attempt-*") if (path / "config.yaml").is_file()]
    return [first, *sorted(later, key=lambda path: int(path.name.rsplit("-", 1)[1]))]


def next_attempt_dir(run_dir: Path) -> Path:
    attempts = attempt_dirs(run_dir)
    return run_dir / RECORD_DIR / (f"attempt-{len(attempts) + 1}" if attempts else "")


def recorded_overrides(run_dir: Path, attempt: int = -1) -> list[str] | None:
    """The command-line overrides of an attempt (the latest by default), if recorded."""
    attempts = attempt_dirs(run_dir)
    if not attempts:
        return None
    return list(yaml.safe_load((attempts[attempt] / "overrides.yaml").read_text()) or [])


def recorded_config(run_dir: Path) -> DictConfig | None:
    """The composed config of the latest attempt, if recorded."""
    attempts = attempt_dirs(run_dir)
    return OmegaConf.load(attempts[-1] / "config.yaml") if attempts else None


def checkpoint_run_dir(checkpoint: Path) -> Path:
    """The run directory whose ``checkpoints/`` holds ``checkpoint``."""
    return Path(checkpoint).resolve().parent.parent


def recorded_choices(run_dir: Path) -> dict[str, str | None]:
    """The config group options of the first attempt (``model: gpt``), if recorded."""
    attempts = attempt_dirs(run_dir)
    if not attempts or not (attempts[0] / "hydra.yaml").is_file():
        return {}
    hydra = yaml.safe_load((attempts[0] / "hydra.yaml").read_text()).get("hydra", {})
    return dict((hydra.get("runtime") or {}).get("choices") or {})


def resume_command(run_dir: Path | str) -> str:
    """The command that continues the run in ``run_dir`` where it stopped."""
    return f"python -m scaletrain.train resume={run_dir}"


def write_yaml(path: Path, content: object) -> None:
    text = OmegaConf.to_yaml(content) if OmegaConf.is_config(content) else yaml.safe_dump(content)
    write_file_atomically(path, lambda file: file.write(text.encode()))


class RunRecord:
    """One attempt at the run in ``run_dir`` (a Hydra job's output directory)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        # Hydra has created the directory and nothing else (it writes no record and opens
        # the log file only when something is logged): empty means this attempt is the
        # first, and the directory is this attempt's own.
        self.new = not any(run_dir.iterdir()) if run_dir.is_dir() else True
        self.attempt_dir: Path | None = None
        self.trainer: Any = None  # the attempt's Trainer, once built

    def write(self, cfg: DictConfig) -> Path | None:
        """Record this attempt (on the job's global rank 0); its preflight has passed."""
        if not is_global_rank_zero():
            return None
        hydra_cfg = HydraConfig.get()
        self.attempt_dir = next_attempt_dir(self.run_dir)
        write_yaml(self.attempt_dir / "config.yaml", cfg)
        write_yaml(self.attempt_dir / "hydra.yaml", OmegaConf.create({"hydra": hydra_cfg}))
        write_yaml(self.attempt_dir / "overrides.yaml", list(hydra_cfg.overrides.task))
        return self.attempt_dir

    @property
    def started(self) -> bool:
        return self.attempt_dir is not None

    def discard(self, even_recorded: bool = False) -> None:
        """Remove what a failed attempt created, where it failed before it was recorded
        (or ``even_recorded``): the run directory itself where it was new (and a sweep
        directory left with nothing but Hydra's multirun.yaml). A directory that held
        anything before is left as it was."""
        if (self.started and not even_recorded) or not self.new or not is_global_rank_zero():
            return
        shutil.rmtree(self.run_dir, ignore_errors=True)
        parent = self.run_dir.parent
        in_sweep = HydraConfig.get().mode.name == "MULTIRUN" and parent.is_dir()
        if in_sweep and [path.name for path in parent.iterdir()] == ["multirun.yaml"]:
            shutil.rmtree(parent, ignore_errors=True)
            parent = parent.parent
        if parent.name in ("runs", "multiruns"):  # made for this run, if now empty
            with contextlib.suppress(OSError):
                parent.rmdir()
