"""What every scaletrain LightningModule shares: building and parallelizing the net,
per-target losses for evaluation, and the optimizer."""

import logging
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig, OmegaConf
from torchmetrics import MeanMetric

from scaletrain.conventions import IGNORE_INDEX
from scaletrain.nets.build import build_net as build
from scaletrain.nets.init import initialize, reset_value, resettable, uncovered
from scaletrain.parallel.apply import FSDPOptions, parallelize
from scaletrain.parallel.materialize import is_on_meta, materialize, parameters_on_meta
from scaletrain.parallel.net_plan import NetPlan
from scaletrain.runtime.ranks import is_global_rank_zero, logs_this_step

log = logging.getLogger("scaletrain")


def build_net(config: dict, seed: int, empty: bool) -> tuple[Any, dict]:
    """The net of ``config`` with its initial weights (``scaletrain.nets.init``), or, where
    ``empty``, with its parameters on the meta device for each rank to allocate its shards;
    and the whole initial values of the parameters no rule covers, computed now, before the
    net is sharded. A parameter that no rule covers and its module cannot reset keeps its
    constructor's value: such a net is built whole (said once)."""
    if empty:
        random_state = torch.get_rng_state()  # a whole build below draws as if first
        with parameters_on_meta():
            net = build(config)
        strays = [name for name in uncovered(net) if not resettable(net, name)]
        if not strays:
            return net, {name: reset_value(net, name, seed) for name in uncovered(net)}
        if is_global_rank_zero():
            log.warning(
                "%s is built whole on every rank, then sharded: no initialization rule covers "
                "%s, whose module has no reset_parameters() (add one, or give the net an "
                "init_parameter(name, value, generator) method)",
                type(net).__name__,
                ", ".join(strays),
            )
        torch.set_rng_state(random_state)
    net = build(config)
    return initialize(net, seed), {}


def plain(config: Any) -> Any:
    """An OmegaConf node as plain Python containers (checkpoints store it as hparams)."""
    if isinstance(config, DictConfig):
        return OmegaConf.to_container(config, resolve=True)
    return config


class ScaleModule(L.LightningModule):
    """Builds ``net`` from its config, so a checkpoint alone can rebuild the module.

    Args:
        net: Hydra config of a plain ``torch.nn.Module`` (``scaletrain.nets`` or the user's).
        optimizer: Hydra config of a partial optimizer (``_partial_: true``).
        scheduler: optional Hydra config of a partial LR scheduler, stepped every step.
        activation_checkpointing: recompute each block's activations in the backward.
        compile: ``torch.compile`` each block.
        parallel: the net's plan for the sharded strategies (``model.parallel``, see
            ``scaletrain.parallel.net_plan``): its blocks, tensor-parallel patterns and
            pipeline ends.
        empty_init: build the net on the meta device, without memory; ``configure_model``
            gives each rank its shards (for the sharded strategies). Either way the
            initial weights depend only on the seed (see ``scaletrain.nets.init``).
    """

    # Every metric the module logs: what monitor.metric and optimized_metric may name.
    LOGGED_METRICS: tuple[str, ...] = ("train/loss", "val/loss", "test/loss")

    def __init__(
        self,
        net: dict,
        optimizer: dict,
        scheduler: dict | None = None,
        activation_checkpointing: bool = False,
        compile: bool = False,
        parallel: dict | None = None,
        empty_init: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(
            {
                "net": plain(net),
                "optimizer": plain(optimizer),
                "scheduler": plain(scheduler),
                "activation_checkpointing": activation_checkpointing,
                "compile": compile,
                "parallel": plain(parallel),
            },
            logger=False,  # the loggers get the run's settings instead (reporting.hparams)
        )
        # seeded by the caller (the runner seeds every rank alike before building)
        self.init_seed = torch.initial_seed()
        self.net, self.computed_init = build_net(self.hparams.net, self.init_seed, empty_init)
        standalone = getattr(self.net, "standalone_config", None)
        if callable(standalone):  # checkpoints rebuild the net without the files it read
            self.hparams.net = {**self.hparams.net, **standalone()}
        self.net_plan = NetPlan.of(self.net, self.hparams.parallel)
        strays = uncovered(self.net)
        if strays and is_global_rank_zero():
            log.info(
                "%s: no initialization rule covers %s; set by %s own reset_parameters() "
                "where it has one, else as the constructor made %s (the same in every layout)",
                type(self.net).__name__,
                ", ".join(strays),
                "its module's" if len(strays) == 1 else "their modules'",
                "it" if len(strays) == 1 else "them",
            )
        # One metric object per stage: torchmetrics state must not mix val and test.
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()
        # Set by the strategy builder for fsdp and model_sharded; not a hyperparameter,
        # so a checkpoint loads under any strategy.
        self.fsdp_options: FSDPOptions | None = None
        self._parallelized = False

    def configure_model(self) -> None:
        """Apply tensor parallel, compile, activation checkpointing and FSDP2 as configured,
        then allocate and initialize a net built on the meta device (each rank its shards).

        Lightning calls this for fit and again for test: the second call does nothing.
        """
        if self._parallelized:
            return
        parallelize(
            self.net,
            self.net_plan,
            mesh=self.device_mesh,
            fsdp=self.fsdp_options,
            activation_checkpointing=self.hparams.activation_checkpointing,
            compile=self.hparams.compile,
        )
        if is_on_meta(self.net):
            offloaded = self.fsdp_options is not None and self.fsdp_options.cpu_offload
            device = torch.device("cpu") if offloaded else self.trainer.strategy.root_device
            materialize(self.net, device, self.init_seed, self.computed_init)
        self.computed_init = {}
        self._parallelized = True

    def net_size(self) -> tuple[int, int]:
        """The net's parameters and their bytes on this rank (a sharded parameter counts
        whole; a pipeline stage counts its own)."""
        params = list(self.net.parameters())
        count = sum(p.numel() for p in params)
        size = sum(p.numel() * p.element_size() for p in params)
        return count, size

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.net(inputs)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all non-ignored targets (classes or next tokens)."""
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        loss = self.loss(self(inputs), targets)
        # On the steps Lightning writes to the loggers, averaged over all ranks: the loss
        # of the global batch, as single-device training of it reports. Between them the
        # progress bar shows this rank's loss: an all-reduce on every step would make the
        # ranks wait for each other mid-step (12% of ddp throughput on 2 CPUs).
        shown = loss.detach()
        if logs_this_step(self.trainer):
            shown = self.trainer.strategy.reduce(shown, reduce_op="mean")
        self.log("train/loss", shown, on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def evaluation_step(
        self, batch: tuple[torch.Tensor, torch.Tensor], stage: str
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Accumulate and log ``<stage>/loss`` over every real target; return the logits,
        the targets and each target's loss (0 for ignored targets), flattened.

        The mean is over targets, not batches, so padding and uneven batches do not skew it.
        """
        inputs, targets = batch
        loss_metric = getattr(self, f"{stage}_loss")
        logits = self(inputs)
        losses = F.cross_entropy(
            logits.flatten(0, -2), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        )
        loss_metric.update(losses[targets.flatten() != IGNORE_INDEX])
        self.log(f"{stage}/loss", loss_metric, on_step=False, on_epoch=True, prog_bar=True)
        return logits, targets, losses

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self.evaluation_step(batch, "test")

    def restart_best(self, best_metric, name: str) -> None:
        """Start tracking the best validation value of metric ``name`` afresh, or, on a
        resume where ``name`` is the monitored metric, from the best score the checkpoint
        callback restored (sanity-check values never count)."""
        best_metric.reset()
        checkpoint = next(  # the best-checkpoint callback (last.ckpt's has no score)
            (c for c in self.trainer.checkpoint_callbacks if isinstance(c, ModelCheckpoint)), None
        )
        if (
            self.trainer.ckpt_path
            and checkpoint is not None
            and checkpoint.monitor == name
            and checkpoint.best_model_score is not None
        ):
            best_metric.update(checkpoint.best_model_score.to(self.device))

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if self.hparams.scheduler is None:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "frequency": 1},
        }
