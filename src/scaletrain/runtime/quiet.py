"""Quiet output: a run prints its progress bar, a short model summary, the final metrics
and its run directory; what the libraries say that a user has nothing to act on is
dropped where it is emitted. ``verbose=true`` keeps everything.

Each message dropped here is named with the reason it is harmless. Warnings that point
at a real risk are not on these lists unless the risk does not apply to scaletrain, and
then the README says why.
"""

import logging
import os
import re
import warnings

# ``log.info(..., extra=FILE_ONLY)``: a line for the run's log file, not the console.
FILE_ONLY = {"console": False}

# Informational messages of library loggers, by logger: (pattern, why it is harmless).
HARMLESS_LOG_MESSAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "lightning.pytorch.utilities.rank_zero": (
        (r"GPU available: |TPU available: ", "restates trainer.accelerator, which the run chose"),
        (r"💡 Tip: ", "an advertisement for a hosted service"),
        (r"`Trainer\(\w+=1(\.0)?\)` was configured so ", "restates the default of a limit"),
        (r"`Trainer\.fit` stopped: ", "the progress bar and the metrics table show the end"),
        (r"Restoring states from the checkpoint path", "scaletrain says what it resumes from"),
        (r"(Restored all states|Loaded model weights) from the checkpoint", "the same"),
        (r"`weights_only` was not set", "scaletrain saves whole states on purpose"),
        (r"-+\ndistributed_backend=", "restates the number of processes the run asked for"),
    ),
    "lightning.fabric.utilities.seed": (
        (r"(\[rank: \d+\] )?Seed set to ", "the seed is in the run's recorded config"),
    ),
    "lightning.fabric.utilities.distributed": (
        (r"Initializing distributed: ", "one line per rank that every distributed run prints"),
    ),
    "submitit": (
        (
            r"Call #\d+ - Bypassing sacct error",
            "a cluster without accounting: submitit reads a job's end from its result file",
        ),
    ),
    "optuna.storages._in_memory": (
        (r"A new study created in memory", "the sweep's own lines name the study"),
    ),
    "mlflow.store.db.utils": (
        (
            r"Creating initial MLflow database tables|Updating database tables",
            "MLflow sets up its local store",
        ),
    ),
    "lightning.pytorch.accelerators.cuda": (
        (r"LOCAL_RANK: \d+ - CUDA_VISIBLE_DEVICES", "restates the devices the run was given"),
    ),
}

# Python warnings: (message pattern, category, why it is harmless).
HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        Warning,
        "Lightning's own use of a torch API that still works (Lightning 2.6, torch 2.13)",
    ),
    (
        r"torch\.distributed\.nn\.functional\.all_gather is deprecated",
        Warning,
        "Lightning's all_gather, used once per logging window; still supported by torch",
    ),
    (
        r"The ``compute`` method of metric \w+ was called before the ``update`` method",
        UserWarning,
        "a pipeline stage before the last has no outputs to update its metrics with; it "
        "computes them from the other stages' updates, synced over every rank",
    ),
    (
        r"FSDP2-wrapped module \(\w+\) returned a view tensor",
        UserWarning,
        # tensor parallel hands the net's logits back as a view of the gathered DTensor;
        # the warning is about modifying such a view in place, which scaletrain never
        # does (the loss reads the logits out of place): see the README
        "the logits are never modified in place",
    ),
    (
        r"Be aware that when using `ckpt_path`, callbacks used to create the checkpoint",
        UserWarning,
        "testing a checkpoint reads its weights; the callbacks' state matters only to a "
        "resumed fit, which has the same callbacks",
    ),
    (
        r"Checkpoint directory .* exists and is not empty",
        UserWarning,
        "a resumed run writes into its own checkpoint directory on purpose",
    ),
    (
        r"The '\w+_dataloader' does not have many workers",
        UserWarning,
        "in-memory datasets: the batches are gathered by one indexing operation",
    ),
    (
        r"The `srun` command is available on your system but is not used",
        UserWarning,
        # on a SLURM login node, a run started without srun is one on purpose (a quick
        # check, or a job that torchrun or Lightning starts); under SLURM, srun or the
        # submitit launcher starts every rank
        "a run started without srun on a SLURM login node is meant to run there",
    ),
)

VERBOSE = False


class DropMessages(logging.Filter):
    """Drops the records whose message matches one of ``patterns``."""

    def __init__(self, patterns: list[str]) -> None:
        super().__init__()
        self.pattern = re.compile("|".join(f"(?:{p})" for p in patterns))

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


class ConsoleFilter(logging.Filter):
    """For the console handlers of the job's logging config: drops the lines meant for
    the log file only (unless verbose), and, with ``below``, the levels from there up
    (which another handler shows on stderr)."""

    def __init__(self, below: str | None = None) -> None:
        super().__init__()
        self.below = logging.getLevelName(below) if below else None

    def filter(self, record: logging.LogRecord) -> bool:
        if self.below is not None and record.levelno >= self.below:
            return False
        return VERBOSE or getattr(record, "console", True)


_filters: list[tuple[logging.Logger, DropMessages]] = []


def set_verbosity(verbose: bool) -> None:
    """Drop the harmless library messages (or, ``verbose``, keep everything), in this
    process; idempotent, so each job of a sweep can call it."""
    global VERBOSE
    VERBOSE = verbose
    for logger, drop in _filters:
        logger.removeFilter(drop)
    _filters.clear()
    if verbose:
        os.environ.pop("WANDB_SILENT", None)
        return
    # W&B prints its banner and, offline, how to upload the run, which the README says
    os.environ["WANDB_SILENT"] = "true"
    for name, messages in HARMLESS_LOG_MESSAGES.items():
        logger = logging.getLogger(name)
        drop = DropMessages([pattern for pattern, _ in messages])
        logger.addFilter(drop)
        _filters.append((logger, drop))
    for pattern, category, _ in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
