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
from scaletrain.utils.settings import render, type_problems

PRECISIONS = {
    "cpu": ("32-true", "64-true", "bf16-mixed", "bf16-true"),
    "gpu": ("32-true", "64-true", "16-mixed", "16-true", "bf16-mixed", "bf16-true"),
}
ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(1, n + 1) if n % d == 0)


def positive_finite(value: float) -> bool:
    return 0 < value < float("inf")


def fraction_or_count(value: float) -> bool:
    return 0 <= value <= 1 if isinstance(value, float) else value >= 0


def interval(value: float) -> bool:
    return 0 < value <= 1 if isinstance(value, float) else value >= 1


# Settings whose type admits values that cannot work: (setting, test, what is valid).
# Each test sees a value of the right type (the type check comes first); null is left
# to the type check.
LIMITS = (
    ("data.batch_size", lambda v: v >= 1, "a positive integer"),
    ("data.num_workers", lambda v: v >= 0, "0 (load in the main process) or more"),
    ("data.context_length", lambda v: v >= 1, "a positive integer"),
    ("data.val_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("data.test_fraction", lambda v: 0 <= v < 1, "a fraction in [0, 1)"),
    ("model.optimizer.lr", positive_finite, "a positive finite number"),
    ("model.net.dim", lambda v: v >= 1, "a positive integer"),
    ("model.net.num_layers", lambda v: v >= 1, "a positive integer"),
    ("model.net.num_heads", lambda v: v >= 1, "a positive integer"),
    ("model.net.hidden_dims", lambda v: all(w >= 1 for w in v), "a list of positive integers"),
    ("trainer.max_epochs", lambda v: v >= -1, ">= 0 (or -1 for no limit)"),
    ("trainer.max_steps", lambda v: v >= -1, ">= 0 (or -1 for no limit)"),
    ("trainer.min_epochs", lambda v: v >= 0, ">= 0"),
    ("trainer.num_nodes", lambda v: v >= 1, "a positive integer"),
    ("trainer.accumulate_grad_batches", lambda v: v >= 1, "a positive integer"),
    ("trainer.log_every_n_steps", lambda v: v >= 1, "a positive integer"),
    ("trainer.check_val_every_n_epoch", lambda v: v >= 1, "a positive integer or null"),
    ("trainer.num_sanity_val_steps", lambda v: v >= -1, ">= 0 (or -1 for every batch)"),
    (
        "trainer.val_check_interval",
        interval,
        "a fraction of an epoch in (0, 1] or a number of batches >= 1",
    ),
    ("trainer.limit_train_batches", fraction_or_count, "a fraction in [0, 1] or a count >= 0"),
    ("trainer.limit_val_batches", fraction_or_count, "a fraction in [0, 1] or a count >= 0"),
    ("trainer.limit_test_batches", fraction_or_count, "a fraction in [0, 1] or a count >= 0"),
    ("trainer.gradient_clip_val", lambda v: v >= 0, ">= 0, or null for no clipping"),
)


def check_values(cfg: DictConfig, skip: set[str]) -> list[str]:
    """Settings that are wrong on their own (those in ``skip`` already were reported)."""
    problems = []
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed={seed}: must be an integer")
    for setting, test, valid in LIMITS:
        value = OmegaConf.select(cfg, setting)
        if value is None or setting in skip or isinstance(value, str | bool):
            continue
        if not test(value):
            problems.append(f"{setting}={render(value)}: must be {valid}")
    data_context = cfg.data.get("context_length")
    model_context = OmegaConf.select(cfg, "model.net.context_length")
    if (
        isinstance(data_context, int)
        and isinstance(model_context, int)
        and (data_context > model_context)
    ):
        problems.append(
            f"data.context_length={data_context}: longer than the model's "
            f"model.net.context_length={model_context}; valid: 1 to {model_context}"
        )
    return problems


def check_monitor(cfg: DictConfig) -> list[str]:
    """The metric that picks the best checkpoint (and stops early, and is optimized by
    sweeps) is one the model logs."""
    try:
        logged = get_class(cfg.model._target_).LOGGED_METRICS
    except Exception:  # a model class of the user's that does not declare its metrics
        return []
    monitor = OmegaConf.select(cfg, "monitor.metric")
    settings = [("monitor.metric", monitor)]
    for name, callback in (cfg.get("callbacks") or {}).items():
        if isinstance(callback, DictConfig) and callback.get("monitor") not in (None, monitor):
            settings.append((f"callbacks.{name}.monitor", callback.monitor))
    optimized = cfg.get("optimized_metric")
    if optimized not in (None, f"{monitor}_best"):
        settings.append(("optimized_metric", optimized))
    model = cfg.model._target_.rsplit(".", 1)[-1]
    return [
        f"{setting}={metric}: {model} never logs it; valid: {', '.join(logged)}"
        for setting, metric in settings
        if metric is not None and metric not in logged
    ]


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


def setting_of(problem: str) -> str:
    """The setting a problem line names: ``trainer.max_epochs`` of ``trainer.max_epochs=x: ...``."""
    return problem.split("=", 1)[0].split(":", 1)[0]


def validate(cfg: DictConfig) -> list[str]:
    """Every problem found in ``cfg``, one line each, naming the setting and what is valid."""
    unresolved = check_references(cfg)
    if unresolved:
        return unresolved  # later checks would trip over the missing values
    precision = check_precision(cfg)  # a better message than the annotation's for precision
    typed = [p for p in type_problems(cfg) if setting_of(p) not in map(setting_of, precision)]
    mistyped = {setting_of(problem) for problem in typed + precision}
    if mistyped & {"trainer.devices", "trainer.num_nodes", "data.batch_size"}:
        parallel = []  # the sizes below are computed from these
    else:
        parallel = check_parallel_sizes(cfg)
    return (
        typed
        + check_values(cfg, skip=mistyped)
        + check_monitor(cfg)
        + precision
        + parallel
        + check_data_files(cfg)
    )
