"""The flow every run shares, ``train`` or ``eval``:

    check the config -> seed -> build data and model -> check the checkpoint against the
    model -> build the Trainer -> record the attempt -> (the command's own work) ->
    metrics.json -> wait for the ranks this process started

and around it, one job on this rank: the processes of the job, one-line errors, the
signal stop, and a failed attempt's run directory removed where nothing was trained.
"""

import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig

from scaletrain.callbacks.non_finite import NonFiniteLoss
from scaletrain.checkpoint.consolidate import loadable_checkpoint
from scaletrain.checkpoint.contents import checkpoint_problems, resume_length_problems
from scaletrain.cli.errors import user_errors
from scaletrain.cli.overrides import check_command_line
from scaletrain.config.build import build_model, build_trainer
from scaletrain.config.preflight import validate
from scaletrain.data.idx import IDXFormatError
from scaletrain.data.mnist import MNISTFilesMissing
from scaletrain.errors import ConfigError
from scaletrain.models.base import ScaleModule
from scaletrain.parallel.layout import SHARDED
from scaletrain.reporting.config_tree import print_config
from scaletrain.reporting.hparams import end_session
from scaletrain.reporting.metrics import METRICS_FILE, write_json
from scaletrain.reporting.record import RunRecord
from scaletrain.reporting.tensorboard import drop_removed_runs, list_run
from scaletrain.runtime.launch import (
    job_overrides,
    job_processes,
    meet_in_a_fresh_store,
    wait_for_started_ranks,
)
from scaletrain.runtime.memory import mark_baseline
from scaletrain.runtime.quiet import FILE_ONLY, set_verbosity
from scaletrain.runtime.ranks import is_global_rank_zero, local_rank
from scaletrain.runtime.signals import EXIT_STATUS, Preempted

log = logging.getLogger("scaletrain")
Result = TypeVar("Result")

# Failures a user fixes by changing a setting or a file: reported in one line.
USER_ERRORS = (MNISTFilesMissing, IDXFormatError, NonFiniteLoss)


def preflight(cfg: DictConfig) -> None:
    """Print the config where ``print_config`` asks; raise a :class:`ConfigError` with
    every problem of ``cfg``, if it has any."""
    if cfg.get("print_config") and is_global_rank_zero():
        print_config(cfg)
    problems = validate(cfg)
    if problems:
        raise ConfigError(problems)


@dataclass
class Attempt:
    """One attempt at a run, built and recorded: its data, model and Trainer."""

    cfg: DictConfig
    record: RunRecord
    datamodule: L.LightningDataModule
    model: ScaleModule
    trainer: L.Trainer

    @property
    def run_dir(self) -> Path:
        return self.record.run_dir

    def loadable(self, checkpoint: str | None) -> str | None:
        """``checkpoint`` as this run's strategy loads it (a sharded one consolidated into
        the run directory for a strategy that does not shard)."""
        name = self.cfg.strategy.name
        return loadable_checkpoint(checkpoint, name in SHARDED, self.run_dir, name == "pipeline")

    def finish(self, summary: dict[str, Any]) -> None:
        """Write ``summary`` as metrics.json (global rank 0), close the TensorBoard session,
        and wait for the ranks this process started."""
        if self.trainer.is_global_zero:
            write_json(self.run_dir / METRICS_FILE, summary)
            end_session(self.trainer)
            log.info("run directory: %s", self.run_dir)
        wait_for_started_ranks(self.trainer)


def start(
    cfg: DictConfig, record: RunRecord, checkpoint: str | None, checkpoint_hint: str | None = None
) -> Attempt:
    """Build the attempt for a config that passed :func:`preflight`, starting from
    ``checkpoint``; once it is built, record it. ``checkpoint_hint`` is added to the
    problems of a checkpoint that does not fit the model."""
    meet_in_a_fresh_store()  # workers torchrun restarted: before Lightning forms the group
    mark_baseline()  # what the model costs is measured from here (perf/* memory figures)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg)
    problems = checkpoint_problems(checkpoint, model)
    if problems and checkpoint_hint:
        problems.append(checkpoint_hint)
    if cfg.get("train"):
        problems += resume_length_problems(checkpoint, cfg.trainer.get("max_epochs"))
    if problems:
        raise ConfigError(problems)
    trainer = build_trainer(cfg, model)
    # The preflight has passed: from here on, the attempt is part of the run's record.
    record.write(cfg)
    record.trainer = trainer
    if trainer.is_global_zero:
        list_run(trainer, board_index(cfg), record.run_dir)
        log.info("run directory: %s", record.run_dir)
    log.info(
        "rank %d: overrides %s", trainer.global_rank, " ".join(job_overrides()), extra=FILE_ONLY
    )
    return Attempt(cfg, record, datamodule, model, trainer)


def board_index(cfg: DictConfig) -> Path | None:
    """The directory that lists every run for TensorBoard (``paths.tensorboard_dir``)."""
    index = cfg.paths.get("tensorboard_dir")
    return Path(index) if index else None


def is_failure(raised: BaseException) -> bool:
    """An error, or an exit with an error's status; not a stop by a signal."""
    if isinstance(raised, SIGTERMException | KeyboardInterrupt):
        return False
    return not isinstance(raised, SystemExit) or raised.code not in (0, None)


@contextmanager
def settled_on_failure(record: RunRecord, cfg: DictConfig) -> Iterator[None]:
    """Leave a failed attempt's traces as a user wants them: the new run directory
    removed where nothing was trained (a run that never began is no run to look at), or
    the run marked as failed in TensorBoard's HPARAMS where it trained. A stop by a signal
    is no failure: its run directory stays to be resumed."""
    try:
        yield
    except BaseException as raised:
        trainer = record.trainer
        if not is_failure(raised):
            record.discard()
        elif trainer is not None and (trainer.global_step > 0 or not record.new):
            if trainer.is_global_zero:
                end_session(trainer, failed=True)
        else:
            record.discard(even_recorded=True)
            index = board_index(cfg)
            if index is not None and is_global_rank_zero():
                drop_removed_runs(index)
        raise


def run_job(
    module: str,
    cfg: DictConfig,
    work: Callable[[RunRecord], Result],
    resume_hint: str | None = None,
) -> Result:
    """Do ``work`` as one job of ``module`` (a Hydra main) on this rank. A problem the user
    can fix exits with status 2 and one line each; a signal stops the job with 143 and,
    where a run was begun, prints ``resume_hint``."""
    record = RunRecord(Path(HydraConfig.get().runtime.output_dir))
    try:
        with (
            job_processes(module, bool(cfg.get("verbose", False)), resume_hint),
            settled_on_failure(record, cfg),
            user_errors(*USER_ERRORS, logged=lambda: record.started, resume_hint=resume_hint),
        ):
            return work(record)
    except Preempted as preempted:
        # a run stopped before its preflight passed has left nothing to resume
        if resume_hint and is_global_rank_zero() and (record.started or not record.new):
            log.info("resume with: %s", resume_hint)
        sys.exit(preempted.code)
    except SIGTERMException:  # Lightning's own handling, where the callback is left out
        sys.exit(EXIT_STATUS)


def command_line(
    config_name: str,
    main: Callable[[], object],
    expand: Callable[[list[str]], list[str]] | None = None,
) -> Callable[[], None]:
    """The command-line entry point of the Hydra ``main`` for ``config_name``: the
    arguments are first rewritten by ``expand`` (``resume=``), then every unknown option
    or key is reported before Hydra starts (Hydra stops at the first)."""

    def run() -> None:
        # before Hydra starts: a sweeper speaks before the first job sets this per job
        set_verbosity("verbose=true" in sys.argv[1:])
        if expand is not None:
            sys.argv[1:] = expand(sys.argv[1:])
        sys.argv[1:] = check_command_line(config_name, sys.argv[1:], report=local_rank() == 0)
        main()

    return run
