"""Training speed and memory, every ``log_every_n_steps`` steps: ``perf/*`` scalars.

Timing covers whole windows of steps, so the only device synchronization is one per
window (on GPU); nothing is added to the step itself.
"""

import time

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback

from scaletrain.parallel.layout import data_parallel_rank
from scaletrain.parallel.pipeline_strategy import whole_net_size
from scaletrain.runtime.memory import peak_resident_bytes


def peak_memory_bytes(device: torch.device) -> int:
    """This process's peak: max allocated on a GPU, peak resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return peak_resident_bytes()


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matrix multiplications run in under a Lightning precision setting."""
    if "bf16" in precision:
        return torch.bfloat16
    return torch.float16 if precision.startswith("16") else torch.float32


class Throughput(Callback):
    """Logs samples/s and tokens/s (global, all data-parallel ranks), seconds per step,
    every rank's peak memory, and model FLOPs utilization where the device's peak is
    known (training FLOPs estimated as 6 x parameters x tokens).

    Lightning's ``ThroughputMonitor`` measures the same on rank 0 alone, but it
    synchronizes the GPU after every batch (to read the clock per batch), which costs
    throughput on the very runs being measured; timing whole windows needs one
    synchronization per window. Its ``get_available_flops`` table gives the peak here.
    """

    def __init__(self) -> None:
        self.window_start: float | None = None
        self.window_first_step = 0  # optimizer steps, not batches (gradient accumulation)
        self.window_samples = 0
        self.window_tokens = 0
        self.net_parameters = 0  # the whole net's, every pipeline stage's included

    def on_train_start(self, trainer: L.Trainer, pl_module) -> None:
        self.net_parameters = whole_net_size(trainer)[0]

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        if self.window_start is None:
            self._synchronize(trainer)
            self.window_start = time.perf_counter()
            self.window_first_step = trainer.global_step

    def on_train_batch_end(self, trainer: L.Trainer, pl_module, outputs, batch, batch_idx) -> None:
        inputs = batch[0]
        replicas, _ = data_parallel_rank(trainer.strategy)
        self.window_samples += inputs.shape[0] * replicas
        # Integer inputs are token ids (language models): every id is a token.
        if not torch.is_floating_point(inputs):
            self.window_tokens += inputs.numel() * replicas
        steps = trainer.global_step - self.window_first_step
        if steps and trainer.global_step % trainer.log_every_n_steps == 0:
            self._log_window(trainer, pl_module, steps)

    @staticmethod
    def _synchronize(trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _log_window(self, trainer: L.Trainer, pl_module: L.LightningModule, steps: int) -> None:
        self._synchronize(trainer)
        elapsed = time.perf_counter() - self.window_start
        device = trainer.strategy.root_device
        metrics = {
            "perf/step_time_sec": elapsed / steps,
            "perf/samples_per_sec": self.window_samples / elapsed,
        }
        if self.window_tokens:
            metrics["perf/tokens_per_sec"] = self.window_tokens / elapsed
            peak_flops = get_available_flops(device, compute_dtype(str(trainer.precision)))
            if peak_flops:
                achieved = 6 * self.net_parameters * self.window_tokens / elapsed
                metrics["perf/mfu"] = achieved / (peak_flops * trainer.world_size)
        peaks = pl_module.all_gather(torch.tensor(float(peak_memory_bytes(device)), device=device))
        for rank, value in enumerate(peaks.reshape(-1).tolist()):
            metrics[f"perf/peak_memory_bytes/rank{rank}"] = value
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        self.window_start, self.window_first_step = time.perf_counter(), trainer.global_step
        self.window_samples = self.window_tokens = 0
