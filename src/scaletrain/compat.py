"""Every use of a private or unstable API of Lightning, OmegaConf and torch, in one place.

scaletrain's guarantees rest on a few internals that have no public equivalent. Each is
wrapped here with the reason it is needed and what would replace it; nothing else in
scaletrain touches a private name of another package (``tests/test_compat.py`` checks
both: that the installed versions still have what is relied on, and that no other module
reaches past a public API). After an upgrade of Lightning, torch or OmegaConf, run
``python -m pytest tests/test_compat.py``: a failure names the symbol that moved.
"""

import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any
from weakref import proxy

import lightning as L
import lightning.pytorch.strategies.launchers.subprocess_script as subprocess_script
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import ParallelStrategy, Strategy
from omegaconf import DictConfig, Node
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor.parallel import ParallelStyle

# -- Lightning: how it starts the ranks of a single-machine job ----------------------------

# Lightning starts ranks 1..N-1 by re-running the command line; under Hydra it builds that
# command with this module-level function, looked up when the ranks start. Replacing it is
# the only way to start them with one job's overrides instead of the whole sweep: there is
# no public hook for the child command (Hydra issue #2070 and Lightning pull request
# #18175, both open).
RANK_COMMAND_HOOK = "_hydra_subprocess_cmd"


def set_rank_command(command: Callable[[int], tuple[list[str], str]]) -> None:
    """Have Lightning start each extra rank (by local rank) with ``command(local_rank)``,
    which returns the command line and its working directory."""
    setattr(subprocess_script, RANK_COMMAND_HOOK, command)


def started_rank_processes(trainer: L.Trainer) -> list[subprocess.Popen]:
    """The processes Lightning's launcher started for the other ranks of this node (none
    where it started none): ``_SubprocessScriptLauncher.procs``, an attribute of a private
    class."""
    return list(getattr(trainer.strategy.launcher, "procs", None) or [])


# -- Lightning: where the training loop stands ---------------------------------------------

# The fit loop's progress counters are Lightning internals (``trainer.fit_loop`` is public,
# its epoch loop's ``batch_progress`` is not documented); Lightning has no public "batches
# trained this epoch", which a mid-epoch resume needs, nor "this batch ends the epoch".


def batches_trained_this_epoch(trainer: L.Trainer) -> int:
    """Training batches of the current epoch that have run to their end."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.processed


def at_last_batch_of_epoch(trainer: L.Trainer) -> bool:
    """Whether the training batch just run was the last of its epoch."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


# -- Lightning: a checkpoint written at an epoch's end --------------------------------------

# During ``on_train_epoch_end`` Lightning's fit loop has counted the epoch as processed but
# not yet as completed. Resuming from that state, Lightning 2.6 runs the epoch's end again
# when training is bounded by ``max_steps`` and counts the epoch twice: the next epoch then
# draws the data order of the one after it (its sampler epoch is the processed count) and
# ``current_epoch`` runs one ahead. A checkpoint written there is therefore stored as the
# state Lightning resumes correctly from, whether training is bounded by steps or epochs:
# after a whole epoch, the state between it and the next (as the next epoch's start would
# reset it); after an epoch cut short (``max_steps`` reached, or a stop), the state inside
# it, so that a resume with a later limit trains the epoch's remaining batches.


def _fresh_current(progress: dict[str, Any]) -> None:
    progress["current"] = {name: 0 for name in progress["current"]}


def store_epoch_end_as_resumable(checkpoint: dict[str, Any], whole_epoch: bool) -> None:
    """Rewrite the fit loop's progress in ``checkpoint`` (in place) if it was written during
    an epoch's end, after all of the epoch's batches (``whole_epoch``) or fewer; leave any
    other checkpoint as it is."""
    fit = checkpoint.get("loops", {}).get("fit_loop")
    if not fit:
        return
    epochs = fit["epoch_progress"]
    if epochs["current"]["processed"] != epochs["current"]["completed"] + 1:
        return  # not between the epoch's processed and completed counts
    batches = fit["epoch_loop.batch_progress"]
    if whole_epoch:
        for counts in epochs.values():
            counts["completed"] = counts["processed"]
        _fresh_current(batches)
        batches["is_last_batch"] = False
        _fresh_current(fit["epoch_loop.scheduler_progress"])
        optimizer = fit["epoch_loop.automatic_optimization.optim_progress"]["optimizer"]
        for progress in optimizer.values():
            _fresh_current(progress)
        fit["epoch_loop.val_loop.batch_progress"]["total"] = {
            name: 0 for name in fit["epoch_loop.val_loop.batch_progress"]["total"]
        }
    else:
        for counts in epochs.values():
            counts["processed"] = counts["completed"]


# -- Lightning: saving a checkpoint under ModelParallelStrategy ---------------------------


def saves_distributed_checkpoint(strategy: Strategy) -> bool:
    """Whether ModelParallelStrategy writes sharded checkpoints: the constructor's
    ``save_distributed_checkpoint``, kept only in a private attribute."""
    return bool(strategy._save_distributed_checkpoint)


def save_single_file(
    strategy: Strategy, checkpoint: dict[str, Any], path: Path, storage_options: Any = None
) -> None:
    """Write ``checkpoint`` as one file from global rank 0 through the strategy's checkpoint
    IO, as the base ``Strategy`` does. ModelParallelStrategy's own ``save_checkpoint``
    deletes a directory at ``path`` first, which would destroy the previous sharded
    checkpoint before the new one exists; calling the base class skips that."""
    Strategy.save_checkpoint(strategy, checkpoint, path, storage_options)


def set_up_with_mesh(strategy: Strategy, mesh: Callable[[], DeviceMesh]) -> None:
    """ModelParallelStrategy's ``setup_environment`` with a device mesh of one's own: its
    mesh is fixed at two dimensions (data and tensor parallel), and the Lightning module
    reads it from a private attribute. Without this, a third (pipeline) dimension would
    need a strategy written from ``ParallelStrategy`` up."""
    ParallelStrategy.setup_environment(strategy)  # the accelerator, as every strategy
    strategy._setup_distributed()
    strategy._device_mesh = mesh()
    strategy.lightning_module._device_mesh = strategy._device_mesh


# -- Lightning: how ModelCheckpoint writes the best checkpoint ------------------------------
#
# ModelCheckpoint writes through its ``_save_checkpoint(trainer, filepath)``, which calls
# ``trainer.save_checkpoint(filepath, save_weights_only)`` with no storage options, then
# records the save and tells the loggers. A best checkpoint written in the background
# needs the options: the override repeats that bookkeeping around a save that passes them.


def save_model_checkpoint(
    callback: ModelCheckpoint, trainer: L.Trainer, filepath: str, storage_options: Any
) -> None:
    trainer.save_checkpoint(filepath, callback.save_weights_only, storage_options)
    callback._last_global_step_saved = trainer.global_step
    callback._last_checkpoint_saved = filepath
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.after_save_checkpoint(proxy(callback))


# -- torch: device meshes -------------------------------------------------------------------


def flatten_mesh(mesh: DeviceMesh, dims: tuple[str, ...]) -> DeviceMesh:
    """Register the flattened mesh of ``dims`` (``DeviceMesh._flatten``: private in torch
    2.13; torchtitan uses it the same way). With it registered, DTensor reduces a value
    partial over all those dimensions in one collective instead of one per dimension."""
    return mesh[dims]._flatten()


class CustomParallelStyle(ParallelStyle):
    """Base of a tensor-parallel style of scaletrain's own: implement :meth:`apply`.
    torch's ``ParallelStyle`` is public, but the method ``parallelize_module`` calls on
    it is the private ``_apply``."""

    def apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        raise NotImplementedError

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        return self.apply(module, device_mesh)


# -- transformers: a model's own parallel plans -------------------------------------------


def hf_parallel_plans(model: nn.Module) -> tuple[dict[str, str], dict[str, Any]]:
    """A transformers model's tensor-parallel and pipeline plans, keyed by module names
    of the model (the base model's plans with its prefix, and the head's): the instance
    attributes ``_tp_plan`` and ``_pp_plan`` that ``post_init`` fills; the public config
    holds the base model's alone (``base_model_tp_plan``, ``base_model_pp_plan``)."""
    return dict(getattr(model, "_tp_plan", None) or {}), dict(
        getattr(model, "_pp_plan", None) or {}
    )


# -- Lightning: the arguments its W&B logger hands to wandb.init ---------------------------
#
# Lightning 2.6 always passes ``anonymous`` (None unless asked for), a setting W&B 0.19+
# warns has no effect, on every run; the logger keeps its wandb.init arguments in
# ``_wandb_init``, read when the run starts.


def drop_unset_wandb_anonymous(logger: Any) -> None:
    if logger._wandb_init.get("anonymous") is None:
        logger._wandb_init.pop("anonymous", None)


# -- OmegaConf: reading a config node without resolving it --------------------------------

# Walking a config to check it must not resolve interpolations (a broken one is reported by
# its own check) nor fail on ``???``; OmegaConf's public accessors do both.


def child_node(node: DictConfig, key: str) -> Node:
    """The node under ``key`` of ``node``, unresolved."""
    return node._get_node(key)


def is_none_node(node: Node) -> bool:
    """Whether ``node`` holds null (a config group switched off)."""
    return node._is_none()


# -- torch: evaluating a V-shaped pipeline ------------------------------------------------


def forward_only(schedule: Any) -> Any:
    """``schedule`` (a runtime schedule of torch.distributed.pipelining, e.g. ZBV) with
    its actions cut to the forwards and their sends and receives, for evaluation. Its own
    ``eval`` still runs the backward actions, as no-ops, except where two adjacent stages
    share a rank (a V holds such a pair): there it hands the gradient over and fails in
    torch 2.13 ("can't steal_bwd_input if this stage doesn't have backward"). The lowered
    actions are an undocumented attribute (``pipeline_order_with_comms``)."""
    kept = {"FORWARD", "SEND_F", "RECV_F"}
    schedule.pipeline_order_with_comms = {
        rank: [action for action in actions if action.computation_type.name in kept]
        for rank, actions in schedule.pipeline_order_with_comms.items()
    }
    return schedule


# -- torchmetrics: a metric's value for one batch --------------------------------------------

# Lightning logs a torchmetrics object on a step by the value its last forward computed,
# kept in a private attribute. Under a pipeline the step runs on the last stage only; the
# other stages log their own (unused) object of the same name with that batch's value.
METRIC_STEP_VALUE = "_forward_cache"


def metric_step_value(metric: Any) -> Any:
    value = getattr(metric, METRIC_STEP_VALUE, None)
    return value.detach() if hasattr(value, "detach") else None


def set_metric_step_value(metric: Any, value: Any) -> None:
    setattr(metric, METRIC_STEP_VALUE, value)
