"""Preflight checks: a pure function of the composed config, run before the Trainer
starts any worker process. Every problem is reported at once, one line each."""

import torch
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError

from scaletrain.parallel.plans import split_sizes
from scaletrain.parallel.strategy import (
    STRATEGIES,
    accelerator_type,
    data_parallel_size,
    tensor_parallel_size,
    world_size,
)

PRECISIONS = {
    "cpu": ("32-true", "64-true", "bf16-mixed", "bf16-true"),
    "gpu": ("32-true", "64-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true"),
}
ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def check_values(cfg: DictConfig) -> list[str]:
    """Settings that are wrong on their own."""
    problems = []
    batch_size = cfg.data.get("batch_size")
    if not isinstance(batch_size, int) or batch_size < 1:
        problems.append(f"data.batch_size={batch_size}: must be a positive integer")
    lr = OmegaConf.select(cfg, "model.optimizer.lr")
    if lr is not None and not (isinstance(lr, int | float) and 0 < lr < float("inf")):
        problems.append(f"model.optimizer.lr={lr}: must be a positive finite number")
    for key in ("trainer.max_epochs", "trainer.max_steps"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value < -1:
            problems.append(f"{key}={value}: must be >= 0 (or -1 for no limit)")
    workers = cfg.data.get("num_workers", 0)
    if not isinstance(workers, int) or workers < 0:
        problems.append(f"data.num_workers={workers}: must be 0 (load in the main process) or more")
    data_context = cfg.data.get("context_length")
    model_context = OmegaConf.select(cfg, "model.net.context_length")
    if data_context and model_context and data_context > model_context:
        problems.append(
            f"data.context_length={data_context}: longer than the model's "
            f"model.net.context_length={model_context}; valid: 1 to {model_context}"
        )
    return problems


def check_precision(cfg: DictConfig) -> list[str]:
    """A precision the accelerator can run."""
    precision = ALIASES.get(str(cfg.trainer.precision), str(cfg.trainer.precision))
    accelerator = accelerator_type(cfg.trainer)
    valid = PRECISIONS.get(accelerator, PRECISIONS["cpu"])
    if accelerator == "gpu" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        valid = tuple(p for p in valid if not p.startswith("bf16"))
    if precision not in valid:
        return [
            f"trainer.precision={cfg.trainer.precision}: not supported on {accelerator}; "
            f"valid: {', '.join(valid)}"
        ]
    problems = []
    mixed = cfg.strategy.get("mixed_precision")
    if mixed is not None and mixed not in ("bf16", "fp16", "fp32"):
        problems.append(f"strategy.mixed_precision={mixed}: valid: null, bf16, fp16, fp32")
    if cfg.strategy.get("cpu_offload") and accelerator != "gpu":
        problems.append(
            "strategy.cpu_offload=true: offloads from GPU memory, but this run is on "
            f"{accelerator}; valid here: false"
        )
    return problems


def check_parallel_sizes(cfg: DictConfig) -> list[str]:
    """The strategy, the world size, the tensor-parallel degree and the global batch agree."""
    name = cfg.strategy.name
    if name not in STRATEGIES:
        return [f"strategy.name={name}: unknown; valid: {', '.join(STRATEGIES)}"]
    world = world_size(cfg.trainer)
    if world is None:
        return [f"trainer.devices={cfg.trainer.devices}: give a number of devices, a list, or auto"]
    devices = cfg.trainer.devices
    if accelerator_type(cfg.trainer) == "gpu" and isinstance(devices, int):
        available = torch.cuda.device_count()
        if available == 0:
            return [
                f"trainer.accelerator={cfg.trainer.accelerator}: this machine has no GPU; "
                "use trainer=cpu"
            ]
        if devices > available:
            return [
                f"trainer.devices={devices}: this machine has {available} GPU(s); "
                f"valid: 1 to {available}, or trainer=cpu"
            ]
    if name == "auto" and world > 1:
        return [
            f"trainer.devices={cfg.trainer.devices}: strategy=auto runs one process; "
            f"use strategy=ddp, fsdp or model_sharded for {world} processes"
        ]
    tp = tensor_parallel_size(cfg.strategy)
    if name != "model_sharded" and tp != 1:
        return [
            f"strategy.tensor_parallel_size={tp}: only model_sharded splits the model; "
            f"use strategy=model_sharded or 1"
        ]
    if tp < 1 or world % tp:
        return [
            f"strategy.tensor_parallel_size={tp}: must divide the world size {world} "
            f"(trainer.devices x trainer.num_nodes); valid: {divisors(world)}"
        ]
    problems = []
    if tp > 1:
        for setting, size in split_sizes(
            OmegaConf.to_container(cfg.model.net, resolve=True)
        ).items():
            if size % tp:
                problems.append(
                    f"strategy.tensor_parallel_size={tp} does not divide "
                    f"{setting}={size}; valid: {divisors(size)}"
                )
    data_parallel = data_parallel_size(cfg.strategy, world)
    batch_size = cfg.data.batch_size
    if isinstance(batch_size, int) and batch_size % data_parallel:
        problems.append(
            f"data.batch_size={batch_size}: the global batch must divide by the "
            f"data-parallel size {data_parallel} (world {world} / tensor parallel {tp})"
        )
    return problems


def check_data_files(cfg: DictConfig) -> list[str]:
    """Files the data module needs and will not fetch: a data module that reads files
    says which through its ``preflight_problems(data_cfg)``."""
    try:
        data_class = get_class(cfg.data.get("_target_"))
    except Exception:  # a factory function, or no such target: instantiate reports that
        return []
    check = getattr(data_class, "preflight_problems", None)
    return check(cfg.data) if check else []


def check_references(cfg: DictConfig) -> list[str]:
    """Required values are set and every ``${...}`` reference resolves."""
    try:
        missing = sorted(OmegaConf.missing_keys(cfg))
        OmegaConf.to_container(cfg.model, resolve=True)
        OmegaConf.to_container(cfg.data, resolve=True)
    except InterpolationResolutionError as error:
        return [
            f"{error.full_key}: refers to a setting that does not exist ({error.msg}); the "
            f"chosen groups do not fit together (model=mlp goes with data=digits, mnist or "
            f"synthetic; model=gpt with data=text)"
        ]
    return [f"{key} is required: set it on the command line, e.g. {key}=..." for key in missing]


def validate(cfg: DictConfig) -> list[str]:
    """Every problem found in ``cfg``, one line each, naming the setting and what is valid."""
    unresolved = check_references(cfg)
    if unresolved:
        return unresolved  # later checks would trip over the missing values
    return (
        check_values(cfg) + check_precision(cfg) + check_parallel_sizes(cfg) + check_data_files(cfg)
    )
