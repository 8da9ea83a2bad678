"""Benchmark: framework overhead, data-parallel scaling, memory per strategy, compile.

    python -m scaletrain.benchmark                 # full: a few minutes on 2 CPU cores
    python -m scaletrain.benchmark --tiny          # seconds: checks that everything runs

Every figure is a ratio of two measurements taken in the same run on the same machine,
after warm-up, as the median over repeats. Prints a markdown table and writes JSON.
"""

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import cycle
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from scaletrain.checkpoint.consolidate import is_sharded_checkpoint
from scaletrain.checkpoint.export import sharded_tensors
from scaletrain.config import CONFIG_DIR
from scaletrain.config.build import build_trainer
from scaletrain.parallel.pipeline import stages_per_rank
from scaletrain.parallel.pipeline_strategy import TIMELINE_FILE
from scaletrain.parallel.timeline import draw
from scaletrain.reporting.tensorboard import event_dir
from scaletrain.runtime.quiet import set_verbosity

# The workloads: overrides of the train config. Each is sized so that a step does real
# work (tens to hundreds of milliseconds on a CPU core), as in actual training.
WORKLOADS = {
    "gpt": ["experiment=gpt_text"],
    "mlp": [
        "data=synthetic",
        "data.num_features=784",
        "data.num_samples.train=16384",
        "data.batch_size=256",
        "model.net.hidden_dims=[1024,1024]",
    ],
}
TINY_WORKLOADS = {
    "gpt": [
        *WORKLOADS["gpt"],
        "data.max_bytes=300000",
        "model.net.dim=32",
        "model.net.num_layers=4",  # a block per stage, 2 stages on each of 2 ranks
    ],
    "mlp": ["data=synthetic", "data.batch_size=32"],
}
# A GPT whose parameters dominate its memory, for the per-strategy memory comparison.
MEMORY_GPT = [
    "model.net.dim=512",
    "model.net.num_layers=4",
    "data.batch_size=8",
    "data.context_length=64",
]
# A GPT whose fp32 parameters take 400 MB (101 M parameters), for the memory it takes
# each rank to build the model and to train it; 1 MB of text, so that the figures are
# the model's.
LARGE_GPT = [
    "model.net.dim=1024",
    "model.net.num_layers=8",
    "data.batch_size=8",
    "data.context_length=64",
    "data.max_bytes=1000000",
]
CHECKPOINT_LAYOUTS = {
    "single": [],
    "fsdp_2": ["strategy=fsdp", "trainer.devices=2"],
}
SETUP_LAYOUTS = {
    "ddp_2": ["strategy=ddp", "trainer.devices=2"],
    "fsdp_2": ["strategy=fsdp", "trainer.devices=2"],
    "fsdp_4": ["strategy=fsdp", "trainer.devices=4"],
}


def compose_train(overrides: list[str], output_dir: Path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train", overrides=[*overrides, f"paths.output_dir={output_dir}"])


class StepClock(Callback):
    """The start time of every training batch (one optimizer step each here)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_batch_start(self, *args) -> None:
        self.starts.append(time.perf_counter())


def block_median(starts: list[float], warmup: int, repeats: int) -> float:
    """Median over ``repeats`` blocks of the mean step time, after ``warmup`` steps."""
    intervals = [b - a for a, b in zip(starts[:-1], starts[1:], strict=True)][warmup:]
    size = max(1, len(intervals) // repeats)
    blocks = [intervals[i : i + size] for i in range(0, size * repeats, size)]
    return statistics.median(statistics.fmean(block) for block in blocks if block)


def trainer_step_time(overrides: list[str], steps: int, warmup: int, repeats: int) -> dict:
    """Seconds per optimizer step through scaletrain's Trainer path, default callbacks and
    logging included; also the time from building to the first step."""
    with tempfile.TemporaryDirectory() as output_dir:
        cfg = compose_train(
            [
                *overrides,
                f"trainer.max_steps={steps}",
                "trainer.max_epochs=-1",
                "trainer.limit_val_batches=0",
                "test=false",
                # no validation, so no best checkpoint; no bar between the figures
                "callbacks.model_checkpoint=null",
                "callbacks.rich_progress_bar=null",
                "trainer.enable_progress_bar=false",
            ],
            Path(output_dir),
        )
        built = time.perf_counter()
        L.seed_everything(cfg.seed, verbose=False)
        datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
        trainer = build_trainer(cfg, model)
        clock = StepClock()
        trainer.callbacks.append(clock)
        trainer.fit(model, datamodule=datamodule)
    return {
        "step_time_sec": block_median(clock.starts, warmup, repeats),
        "time_to_first_step_sec": clock.starts[0] - built,
    }


def plain_loop_step_time(overrides: list[str], steps: int, warmup: int, repeats: int) -> float:
    """Seconds per step of a plain PyTorch loop doing the same work: the same net,
    optimizer, data loader, batch and loss, and nothing else."""
    cfg = compose_train(overrides, Path(tempfile.gettempdir()))
    L.seed_everything(cfg.seed, verbose=False)
    datamodule, model = instantiate(cfg.data), instantiate(cfg.model)
    datamodule.setup("fit")
    net, optimizer = model.net, model.configure_optimizers()
    net.train()
    starts = []
    for _, (inputs, targets) in zip(range(steps), cycle(datamodule.train_dataloader())):
        starts.append(time.perf_counter())
        optimizer.zero_grad()
        model.loss(net(inputs), targets).backward()
        optimizer.step()
    return block_median(starts, warmup, repeats)


def import_time() -> float:
    """Seconds for a fresh interpreter to import the training entry point."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import scaletrain.train"], check=True)
    return time.perf_counter() - started


def cli_run(
    overrides: list[str], run_dir: Path, threads: int = 1, val_batches: int = 0
) -> dict[str, list[float]]:
    """Run ``python -m scaletrain.train`` and return its perf/* scalars."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    command = [
        sys.executable,
        "-m",
        "scaletrain.train",
        *overrides,
        "callbacks.rich_progress_bar=null",
        "trainer.enable_progress_bar=false",
        "test=false",
        f"trainer.limit_val_batches={val_batches}",
        f"hydra.run.dir={run_dir}",
        f"paths.root_dir={run_dir.parent}",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(
            f"{' '.join(overrides)} failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
        )
    return perf_scalars(run_dir)


def perf_scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every ``perf/*`` series a run logged to TensorBoard."""
    events = EventAccumulator(str(event_dir(run_dir)))
    events.Reload()
    return {
        tag: [event.value for event in events.Scalars(tag)]
        for tag in events.Tags()["scalars"]
        if tag.startswith("perf/")
    }


def steady(values: list[float]) -> float:
    """Median of a perf series without its first window (start-up, compilation)."""
    return statistics.median(values[1:] if len(values) > 1 else values)


def measure_overhead(workloads: dict, steps: int, warmup: int, repeats: int) -> dict:
    """Trainer path against the plain loop, alternating the two ``repeats`` times so that
    drifts of the machine's speed hit both alike; medians of each."""
    results = {}
    for name, overrides in workloads.items():
        plain, trainer, first_step = [], [], []
        for _ in range(repeats):
            plain.append(plain_loop_step_time(overrides, steps, warmup, repeats))
            figures = trainer_step_time(overrides, steps, warmup, repeats)
            trainer.append(figures["step_time_sec"])
            first_step.append(figures["time_to_first_step_sec"])
        results[name] = {
            "plain_step_sec": statistics.median(plain),
            "trainer_step_sec": statistics.median(trainer),
            "overhead_ratio": statistics.median(trainer) / statistics.median(plain),
            "time_to_first_step_sec": statistics.median(first_step),
        }
    return results


def steady_run(overrides: list[str], steps: int) -> list[str]:
    """Overrides for a run of ``steps`` optimizer steps, timed in windows of 5 steps."""
    return [
        *overrides,
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        "trainer.log_every_n_steps=5",
    ]


def measure_scaling(overrides: list[str], per_rank_batch: int, steps: int, root: Path) -> dict:
    """samples/s of ddp on 2 ranks against 1 rank, one thread each, same per-rank batch."""
    common = steady_run(overrides, steps)
    one = cli_run([*common, f"data.batch_size={per_rank_batch}"], root / "ddp1")
    two = cli_run(
        [*common, f"data.batch_size={2 * per_rank_batch}", "strategy=ddp", "trainer.devices=2"],
        root / "ddp2",
    )
    one_rate, two_rate = steady(one["perf/samples_per_sec"]), steady(two["perf/samples_per_sec"])
    return {
        "samples_per_sec_1_rank": one_rate,
        "samples_per_sec_2_ranks": two_rate,
        "speedup": two_rate / one_rate,
    }


MEMORY_LAYOUTS = {
    "single": [],
    "ddp": ["strategy=ddp", "trainer.devices=2"],
    "fsdp": ["strategy=fsdp", "trainer.devices=2"],
    "model_sharded": ["strategy=model_sharded", "trainer.devices=2"],
    "pipeline": ["strategy=pipeline", "trainer.devices=2"],
}


def measure_memory(overrides: list[str], root: Path, layouts: list[str]) -> dict:
    """Per-rank bytes of parameters, gradients, optimizer state, and peak RSS, for each of
    ``layouts`` (names in :data:`MEMORY_LAYOUTS`; "single" among them)."""
    results = {}
    for name in layouts:
        layout = MEMORY_LAYOUTS[name]
        perf = cli_run(
            [*overrides, *layout, "trainer.max_steps=3", "trainer.log_every_n_steps=1"],
            root / f"memory-{name}",
        )
        results[name] = {
            key: perf[f"perf/{key}_bytes"][0]
            for key in ("params", "grads", "optimizer_state", "model_state")
        }
        results[name]["peak_rss_bytes"] = max(perf["perf/peak_memory_bytes/rank0"])
    for name in results:
        results[name]["model_state_vs_single"] = (
            results[name]["model_state"] / results["single"]["model_state"]
        )
    return results


# The pipeline's workload: gpt_text's GPT at a width where a microbatch's compute (tens of
# milliseconds) is well above a transfer of its activations over gloo (1.5 ms), and a
# batch whose 8 microbatches still hold 4 samples each.
PIPELINE_GPT = ["model.net.dim=256", "data.batch_size=32"]


class EvalClock(Callback):
    """Logs ``perf/val_samples_per_sec``: the samples of each validation (sanity check
    excluded) over its wall time, on rank 0."""

    def __init__(self) -> None:
        self.started, self.samples = 0.0, 0

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module) -> None:
        self.started, self.samples = time.perf_counter(), 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        self.samples += len(batch[0])

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.samples:
            return
        rate = self.samples / (time.perf_counter() - self.started)
        for logger in trainer.loggers:
            logger.log_metrics({"perf/val_samples_per_sec": rate}, step=trainer.global_step)


EVAL_CLOCK = "+callbacks.eval_clock={_target_: scaletrain.benchmark.EvalClock}"


def reference_pipeline_rate(overrides: list[str], schedule: str, microbatches: int) -> float:
    """samples/s of torch's schedule alone on the same stages (scaletrain.pipeline_reference),
    2 processes of one thread."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "-m", "scaletrain.pipeline_reference", "--schedule", schedule,
        "--microbatches", str(microbatches), *overrides,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"pipeline reference failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])["samples_per_sec"]


def measure_pipeline(
    overrides: list[str], root: Path, steps: int, microbatches: tuple[int, ...] = (1, 2, 4, 8)
) -> dict:
    """samples/s of a 2-stage pipeline (GPipe, which takes any number of microbatches;
    one thread per stage) with each number of microbatches ``m``, against one process on
    the same batch, and against torch's schedule alone on the same stages. A pipeline of
    ``p`` stages kept busy would be ``p`` times as fast as one process; each stage is idle
    for ``p - 1`` of every ``m + p - 1`` slots (the bubble), so the ideal is a busy
    fraction of m / (m + p - 1). The measured efficiency is rate / (p x single rate).
    Also each stage's busy fraction, the timeline of the last step with the most
    microbatches, and validation's samples/s against one process's."""
    stages, most = 2, max(microbatches)
    common = steady_run(overrides, steps)
    validating = [EVAL_CLOCK, f"trainer.val_check_interval={steps}"]
    single_perf = cli_run([*common, *validating], root / "pipeline-single", val_batches=10)
    single = steady(single_perf["perf/samples_per_sec"])
    results: dict = {"samples_per_sec_single": single, "stages": stages, "microbatches": {}}
    for count in microbatches:
        run_dir = root / f"pipeline-m{count}"
        layout = [
            "strategy=pipeline",
            "strategy.pipeline_schedule=gpipe",
            f"strategy.pipeline_parallel_size={stages}",
            f"strategy.microbatches={count}",
            f"trainer.devices={stages}",
        ]
        evaluate = count == most
        perf = cli_run(
            [*common, *layout, *(validating if evaluate else [])],
            run_dir,
            val_batches=10 if evaluate else 0,
        )
        rate = steady(perf["perf/samples_per_sec"])
        reference = reference_pipeline_rate(overrides, "gpipe", count)
        ideal = count / (count + stages - 1)
        efficiency = rate / (stages * single)
        results["microbatches"][str(count)] = {
            "samples_per_sec": rate,
            "speedup": rate / single,
            "ideal_fill": ideal,
            "efficiency": efficiency,
            "efficiency_vs_ideal": efficiency / ideal,
            "reference_samples_per_sec": reference,
            "vs_reference": rate / reference,
            "busy_fraction": [
                steady(perf[f"perf/pipeline_busy_fraction/rank{rank}"]) for rank in range(stages)
            ],
        }
        if evaluate:
            results["timeline"] = draw(json.loads((run_dir / TIMELINE_FILE).read_text()))
            val = perf["perf/val_samples_per_sec"][-1]
            val_single = single_perf["perf/val_samples_per_sec"][-1]
            results["validation"] = {
                "microbatches": count,
                "samples_per_sec": val,
                "samples_per_sec_single": val_single,
                "speedup": val / val_single,
            }
    counts = tuple(count for count in microbatches if count >= 4)
    results["schedules"] = measure_pipeline_schedules(
        overrides,
        root,
        steps,
        single,
        counts or microbatches,
        # a looped and a V-shaped one where only whether they run is measured (--tiny)
        SCHEDULE_ROWS if counts else ("interleaved_1f1b", "zbv_zero_bubble"),
    )
    return results


SCHEDULE_ROWS = ("1f1b", "interleaved_1f1b", "interleaved_zero_bubble", "zbv_zero_bubble")


def measure_pipeline_schedules(
    overrides: list[str],
    root: Path,
    steps: int,
    single: float,
    microbatches: tuple[int, ...],
    schedules: tuple[str, ...] = SCHEDULE_ROWS,
) -> dict:
    """Efficiency of each schedule on 2 ranks (the net's 4 blocks as 2 stages, or as 4
    stages, 2 per rank, for the interleaved and V-shaped ones) at each number of
    microbatches, beside its ideal: m / (m + (p - 1) / v) for p ranks of v stages each
    (interleaving divides the bubble by v)."""
    ranks, results = 2, {}
    common = steady_run(overrides, steps)
    for schedule in schedules:
        per_rank = stages_per_rank(schedule)
        results[schedule] = {}
        for count in microbatches:
            perf = cli_run(
                [
                    *common,
                    "strategy=pipeline",
                    f"strategy.pipeline_schedule={schedule}",
                    f"strategy.microbatches={count}",
                    f"trainer.devices={ranks}",
                ],
                root / f"schedule-{schedule}-m{count}",
            )
            rate = steady(perf["perf/samples_per_sec"])
            ideal = count / (count + (ranks - 1) / per_rank)
            efficiency = rate / (ranks * single)
            results[schedule][str(count)] = {
                "stages_per_rank": per_rank,
                "samples_per_sec": rate,
                "efficiency": efficiency,
                "ideal_fill": ideal,
                "efficiency_vs_ideal": efficiency / ideal,
            }
    return results


def per_rank(perf: dict[str, list[float]], name: str) -> list[float]:
    """Every rank's values of ``perf/<name>/rank<N>``, in rank order."""
    found = {
        int(tag.rpartition("rank")[2]): values
        for tag, values in perf.items()
        if tag.startswith(f"perf/{name}/rank")
    }
    return [max(found[rank]) for rank in sorted(found)]


def measure_setup_memory(overrides: list[str], root: Path, layouts: list[str]) -> dict:
    """Per rank, above its resident memory after imports: the peak until the first step
    (building, sharding and initializing the model), as a share of the whole model's
    parameter bytes; and the peak over a few training steps, fsdp against ddp."""
    results = {}
    for name in layouts:
        layout = SETUP_LAYOUTS[name]
        perf = cli_run(
            # the second step is the first with optimizer state from its start
            [*overrides, *layout, "trainer.max_steps=2", "trainer.log_every_n_steps=1"],
            root / f"setup-{name}",
        )
        baselines = per_rank(perf, "baseline_memory_bytes")
        setup_peak = max(per_rank(perf, "setup_peak_memory_bytes"))
        training_peak = max(
            peak - baseline
            for peak, baseline in zip(per_rank(perf, "peak_memory_bytes"), baselines, strict=True)
        )
        params = perf["perf/params_full_bytes"][0]
        results[name] = {
            "params_full_bytes": params,
            "baseline_bytes": max(baselines),
            "setup_peak_bytes": setup_peak,
            "setup_peak_vs_params": setup_peak / params,
            "training_peak_bytes": training_peak,
        }
    results["training_peak_fsdp_vs_ddp_2_ranks"] = (
        results["fsdp_2"]["training_peak_bytes"] / results["ddp_2"]["training_peak_bytes"]
    )
    return results


def size_on_disk(path: Path) -> int:
    """The bytes of a checkpoint file, or of the files of a sharded one."""
    if path.is_dir():
        return sum(file.stat().st_size for file in path.rglob("*") if file.is_file())
    return path.stat().st_size


def load_seconds(path: Path) -> float:
    """The time to read every tensor of a checkpoint into memory on one process."""
    started = time.perf_counter()
    if is_sharded_checkpoint(path):
        sharded_tensors(path)
    else:
        torch.load(path, map_location="cpu", weights_only=False)
    return time.perf_counter() - started


def disk_write_seconds(directory: Path, size: int) -> float:
    """The time to write ``size`` bytes to a new file in ``directory`` and flush them to
    the disk: the file system's sequential write speed, the limit of any save."""
    block = os.urandom(8 << 20)
    probe = directory / "disk-probe"
    started = time.perf_counter()
    with open(probe, "wb") as file:
        for _ in range(max(1, size // len(block))):
            file.write(block)
        file.flush()
        os.fsync(file.fileno())
    seconds = time.perf_counter() - started
    probe.unlink()
    return seconds


def measure_checkpointing(overrides: list[str], root: Path, steps: int, every: int) -> dict:
    """Training time lost per save (``perf/checkpoint_stall_sec``, the median over a
    run's saves), synchronous against in the background, per layout; save and load
    throughput against the disk's own sequential write speed, measured in the same run."""
    results = {}
    for name, layout in CHECKPOINT_LAYOUTS.items():
        figures = {}
        for mode in ("sync", "async"):
            run_dir = root / f"checkpoint-{name}-{mode}"
            perf = cli_run(
                [
                    *overrides,
                    *layout,
                    f"trainer.max_steps={steps}",
                    "trainer.log_every_n_steps=1",
                    f"callbacks.last_checkpoint.every_n_train_steps={every}",
                    f"callbacks.last_checkpoint.async_save={mode == 'async'}",
                ],
                run_dir,
            )
            figures[f"{mode}_stall_sec"] = statistics.median(perf["perf/checkpoint_stall_sec"])
            figures[f"{mode}_saves"] = len(perf["perf/checkpoint_stall_sec"])
        last = root / f"checkpoint-{name}-sync" / "checkpoints" / "last.ckpt"
        size = size_on_disk(last)
        figures["checkpoint_bytes"] = size
        figures["async_vs_sync"] = figures["async_stall_sec"] / figures["sync_stall_sec"]
        figures["save_mb_per_sec"] = size / 1e6 / figures["sync_stall_sec"]
        figures["load_mb_per_sec"] = size / 1e6 / load_seconds(last)
        figures["disk_write_mb_per_sec"] = size / 1e6 / disk_write_seconds(root, size)
        results[name] = figures
    return results


def text_corpus(directory: Path, total_bytes: int) -> Path:
    """``total_bytes`` of real text in files of 1 MiB: the standard library's source,
    repeated."""
    from scaletrain.data.text import stdlib_sources

    source = b"".join(path.read_bytes() for path in stdlib_sources())
    directory.mkdir(parents=True)
    for index in range(-(-total_bytes // 2**20)):
        start = (index * 2**20) % (len(source) - 2**20)
        size = min(2**20, total_bytes - index * 2**20)
        (directory / f"part{index:04d}.txt").write_bytes(source[start : start + size])
    return directory


def measure_token_memory(megabytes: int, steps: int, root: Path) -> dict:
    """Per-rank peak resident memory of ddp on 2 ranks training on prepared token shards
    of ``megabytes`` MB, and on a corpus 10 times larger: reading windows by offset keeps
    it flat."""
    from scaletrain.data.preparation import PrepareSettings, prepare

    results = {}
    for name, size in (("small", megabytes), ("large", 10 * megabytes)):
        # byte tokens, stored as uint16: 2 bytes of shards per byte of text
        text = text_corpus(root / f"text-{name}", size * 10**6 // 2)
        prepared = prepare(
            [text], root / f"tokens-{name}", PrepareSettings(tokenizer="bytes", vocab_size=256)
        )
        shard_bytes = sum(
            (root / f"tokens-{name}" / shard["file"]).stat().st_size
            for split in prepared.manifest["splits"].values()
            for shard in split["shards"]
        )
        perf = cli_run(
            [
                "experiment=gpt_text",
                "data=tokens",
                f"data.dir={root / f'tokens-{name}'}",
                "model.net.dim=64",
                "model.net.num_layers=2",
                "strategy=ddp",
                "trainer.devices=2",
                f"trainer.max_steps={steps}",
                "trainer.log_every_n_steps=5",
            ],
            root / f"tokens-run-{name}",
        )
        results[name] = {
            "shard_bytes": shard_bytes,
            "peak_rss_bytes": max(per_rank(perf, "peak_memory_bytes")),
        }
    results["large_vs_small"] = (
        results["large"]["peak_rss_bytes"] / results["small"]["peak_rss_bytes"]
    )
    return results


def measure_compile(overrides: list[str], steps: int, root: Path) -> dict:
    """tokens/s with ``model.compile=true`` against eager, both on 2 threads."""
    common = steady_run(overrides, steps)
    eager = steady(cli_run(common, root / "eager", threads=2)["perf/tokens_per_sec"])
    compiled = steady(
        cli_run([*common, "model.compile=true"], root / "compiled", threads=2)[
            "perf/tokens_per_sec"
        ]
    )
    return {
        "tokens_per_sec_eager": eager,
        "tokens_per_sec_compiled": compiled,
        "speedup": compiled / eager,
    }


def markdown(results: dict) -> str:
    rows = ["| measure | value | target |", "|---|---|---|"]
    for name, figures in results["overhead"].items():
        rows.append(
            f"| overhead {name}: Trainer / plain loop, s per step | "
            f"{figures['trainer_step_sec']:.4f} / {figures['plain_step_sec']:.4f} = "
            f"**{figures['overhead_ratio']:.3f}x** | "
            f"{'<= 1.05x' if name == 'gpt' else '<= 1.15x'} |"
        )
        rows.append(
            f"| time to first step, {name} (s) | {figures['time_to_first_step_sec']:.2f} | |"
        )
    rows.append(f"| import scaletrain.train (s) | {results['import_time_sec']:.2f} | |")
    scaling = results["scaling"]
    rows.append(
        f"| ddp 2 ranks / 1 rank, samples/s | {scaling['samples_per_sec_2_ranks']:.1f} / "
        f"{scaling['samples_per_sec_1_rank']:.1f} = **{scaling['speedup']:.2f}x** | >= 1.8x |"
    )
    for name, figures in results["memory"].items():
        rows.append(
            f"| model state per rank, {name} (MiB) | {figures['model_state'] / 2**20:.1f} "
            f"(**{figures['model_state_vs_single']:.2f}x** one process; peak RSS "
            f"{figures['peak_rss_bytes'] / 2**20:.0f} MiB) | "
            f"{'<= 0.55x' if name in ('fsdp', 'model_sharded', 'pipeline') else ''} |"
        )
    pipeline = results["pipeline"]
    for count, figures in pipeline["microbatches"].items():
        busy = " / ".join(f"{fraction:.2f}" for fraction in figures["busy_fraction"])
        rows.append(
            f"| pipeline {pipeline['stages']} stages (gpipe), {count} microbatches: samples/s "
            f"(single {pipeline['samples_per_sec_single']:.1f}) | "
            f"{figures['samples_per_sec']:.1f} = **{figures['speedup']:.2f}x**: efficiency "
            f"{figures['efficiency']:.2f} vs ideal fill {figures['ideal_fill']:.2f} = "
            f"**{figures['efficiency_vs_ideal']:.2f}x**; torch's schedule alone "
            f"{figures['reference_samples_per_sec']:.1f} (ours **{figures['vs_reference']:.2f}x**);"
            f" ranks busy {busy} | {'>= 1.4x, >= 0.8x' if count == 8 else ''} |"
        )
    for schedule, counts in pipeline["schedules"].items():
        for count, figures in counts.items():
            rows.append(
                f"| pipeline {schedule}, {figures['stages_per_rank']} stage"
                f"{'s' * (figures['stages_per_rank'] > 1)} per rank, {count} microbatches: "
                f"samples/s | {figures['samples_per_sec']:.1f}: efficiency "
                f"{figures['efficiency']:.2f} vs ideal {figures['ideal_fill']:.2f} = "
                f"**{figures['efficiency_vs_ideal']:.2f}x** | |"
            )
    validation = pipeline.get("validation")
    if validation:
        rows.append(
            f"| pipeline validation, {validation['microbatches']} microbatches: samples/s / one "
            f"process | {validation['samples_per_sec']:.1f} / "
            f"{validation['samples_per_sec_single']:.1f} = **{validation['speedup']:.2f}x** | |"
        )
    setup = results["setup_memory"]
    targets = {"ddp_2": "about 1.0", "fsdp_2": "<= 0.6", "fsdp_4": "<= 0.35"}
    params_mib = setup["ddp_2"]["params_full_bytes"] / 2**20
    for name, target in targets.items():
        if name not in setup:
            continue
        figures = setup[name]
        rows.append(
            f"| setup peak per rank above baseline, {name.replace('_', ' ')} ranks, "
            f"/ parameters ({params_mib:.0f} MiB) | {figures['setup_peak_bytes'] / 2**20:.0f} "
            f"MiB = **{figures['setup_peak_vs_params']:.2f}x** | {target} |"
        )
    rows.append(
        "| training peak per rank above baseline, fsdp / ddp, 2 ranks | "
        f"{setup['fsdp_2']['training_peak_bytes'] / 2**20:.0f} / "
        f"{setup['ddp_2']['training_peak_bytes'] / 2**20:.0f} MiB = "
        f"**{setup['training_peak_fsdp_vs_ddp_2_ranks']:.2f}x** | <= 0.6 |"
    )
    for name, figures in (results.get("checkpointing") or {}).items():
        rows.append(
            f"| training time lost per save, {name.replace('_', ' ')}, GPT of "
            f"{figures['checkpoint_bytes'] / 1e6:.0f} MB checkpoint: in the background / "
            f"synchronous (s) | {figures['async_stall_sec']:.2f} / "
            f"{figures['sync_stall_sec']:.2f} = **{figures['async_vs_sync']:.2f}x** | <= 0.2x |"
        )
        rows.append(
            f"| save / load / disk's sequential write, {name.replace('_', ' ')} (MB/s) | "
            f"{figures['save_mb_per_sec']:.0f} / {figures['load_mb_per_sec']:.0f} / "
            f"{figures['disk_write_mb_per_sec']:.0f} | |"
        )
    tokens = results["token_memory"]
    large, small = tokens["large"], tokens["small"]
    rows.append(
        "| peak RSS per rank, ddp 2 ranks on token shards of "
        f"{large['shard_bytes'] / 1e6:.0f} MB / {small['shard_bytes'] / 1e6:.0f} MB | "
        f"{large['peak_rss_bytes'] / 2**20:.0f} / {small['peak_rss_bytes'] / 2**20:.0f} MiB "
        f"= **{tokens['large_vs_small']:.3f}x** | within 5% |"
    )
    compiled = results["compile"]
    if compiled is not None:
        rows.append(
            f"| gpt_text tokens/s, compile / eager | {compiled['tokens_per_sec_compiled']:.0f} / "
            f"{compiled['tokens_per_sec_eager']:.0f} = **{compiled['speedup']:.2f}x** | |"
        )
    if results["tiny"]:
        # tiny models on a few steps: what start-up and noise cost, not what the code does
        rows = [TINY_NOTE, ""] + [
            re.sub(r"\| ([<>]=[^|]*) \|$", "| (not comparable) |", r) for r in rows
        ]
    timeline = [
        "",
        "Pipeline timeline, the last training step (F forward, L loss, B backward):",
        "```",
        *results["pipeline"]["timeline"],
        "```",
    ]
    return "\n".join([*rows, *timeline]) + "\n"


TINY_NOTE = (
    "--tiny: a smoke test that every measurement runs; tiny models over a few steps, so the "
    "figures below say nothing about speed or memory and are not comparable with the targets."
)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few steps of tiny models")
    parser.add_argument("--output", type=Path, default=Path("outputs/benchmark.json"))
    parser.add_argument("--verbose", action="store_true", help="keep the libraries' lines")
    parser.add_argument(
        "--only",
        choices=("checkpointing", "pipeline"),
        help="this measurement alone (its figures, as JSON)",
    )
    args = parser.parse_args(argv)
    set_verbosity(args.verbose)

    workloads = TINY_WORKLOADS if args.tiny else WORKLOADS
    steps, warmup, repeats = (12, 2, 1) if args.tiny else (60, 10, 3)
    checkpoint_gpt = workloads["gpt"] if args.tiny else [*WORKLOADS["gpt"], *LARGE_GPT]
    checkpoint_steps = (4, 2) if args.tiny else (9, 3)
    if args.only == "checkpointing":
        with tempfile.TemporaryDirectory(dir=args.output.parent) as scratch:
            rows = measure_checkpointing(checkpoint_gpt, Path(scratch), *checkpoint_steps)
        print(json.dumps(rows, indent=2))
        return {"checkpointing": rows}
    pipeline_gpt = [*workloads["gpt"], *([] if args.tiny else PIPELINE_GPT)]
    pipeline_steps = 10 if args.tiny else 40
    pipeline_microbatches = (2,) if args.tiny else (1, 2, 4, 8)
    if args.only == "pipeline":
        with tempfile.TemporaryDirectory() as scratch:
            figures = measure_pipeline(
                pipeline_gpt, Path(scratch), pipeline_steps, pipeline_microbatches
            )
        print(json.dumps(figures, indent=2))
        print("\n".join(figures["timeline"]))
        return {"pipeline": figures}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        results = {
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "torch": torch.__version__,
                "lightning": L.__version__,
            },
            "tiny": args.tiny,
            "overhead": measure_overhead(workloads, steps, warmup, repeats),
            "import_time_sec": import_time(),
            "scaling": measure_scaling(workloads["gpt"], 16, 14 if args.tiny else 60, root),
            "memory": measure_memory(
                workloads["gpt"] if args.tiny else [*WORKLOADS["gpt"], *MEMORY_GPT],
                root,
                ["single", "fsdp", "pipeline"] if args.tiny else list(MEMORY_LAYOUTS),
            ),
            "setup_memory": measure_setup_memory(
                workloads["gpt"] if args.tiny else [*WORKLOADS["gpt"], *LARGE_GPT],
                root,
                ["ddp_2", "fsdp_2"] if args.tiny else list(SETUP_LAYOUTS),
            ),
            "pipeline": measure_pipeline(pipeline_gpt, root, pipeline_steps, pipeline_microbatches),
            "token_memory": measure_token_memory(*((1, 5) if args.tiny else (20, 30)), root),
            "checkpointing": measure_checkpointing(checkpoint_gpt, root, *checkpoint_steps),
            # compiling costs more than everything else --tiny runs: not in the smoke test
            "compile": None if args.tiny else measure_compile(workloads["gpt"], 60, root),
        }
    table = markdown(results)
    print(table)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({**results, "table": table}, indent=2) + "\n")
    print(f"written: {args.output}")
    return results


if __name__ == "__main__":
    main()
