"""Preflight checks: a pure function of the composed config, run before the Trainer
starts any worker process. Every problem is reported at once, one line each."""

import importlib.util
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import (
    InterpolationResolutionError,
    InterpolationToMissingValueError,
    OmegaConfBaseException,
)

from scaletrain import compat
from scaletrain.config.build import lightning_objection, unwrap_instantiation
from scaletrain.config.settings import render, type_problems
from scaletrain.data.base import ShardedDataModule
from scaletrain.nets.build import build_net
from scaletrain.parallel.layout import ParallelLayout, accelerator_type, world_size
from scaletrain.parallel.net_plan import NetPlan
from scaletrain.parallel.pipeline import (
    LOOPED,
    SCHEDULES,
    V_SHAPED,
    ZERO_BUBBLE,
    split_problems,
    stages_per_rank,
)
from scaletrain.parallel.strategies import build_strategy

# The settings Lightning's Trainer resolves and checks itself when it is built.
DEVICE_SETTINGS = ("accelerator", "devices", "num_nodes", "precision")


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
    (
        "callbacks.last_checkpoint.every_n_train_steps",
        lambda v: v >= 1,
        "a positive integer or null",
    ),
    (
        "callbacks.last_checkpoint.every_n_minutes",
        positive_finite,
        "a positive number of minutes or null",
    ),
    ("callbacks.last_checkpoint.keep_last", lambda v: v >= 1, "a positive integer or null"),
)


def check_values(cfg: DictConfig, skip: set[str]) -> list[str]:
    """Settings that are wrong on their own (those in ``skip`` already were reported)."""
    problems = []
    seed = cfg.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"seed={seed}: must be an integer")
    for setting, test, valid in LIMITS:
        value = resolved(cfg, setting)
        if value is None or setting in skip or isinstance(value, str | bool):
            continue
        if not test(value):
            problems.append(f"{setting}={render(value)}: must be {valid}")
    data_context = resolved(cfg, "data.context_length")
    model_context = resolved(cfg, "model.net.context_length")
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
    monitor = OmegaConf.select(cfg, "monitor.metric")
    if monitor is None:
        return [
            "monitor.metric is not set: a model's config names the validation metric that "
            "picks the best checkpoint, e.g. monitor: {metric: val/loss, mode: min}"
        ]
    try:
        logged = get_class(cfg.model._target_).LOGGED_METRICS
    except Exception:  # a model class of the user's that does not declare its metrics
        return []
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


@contextmanager
def quiet_lightning() -> Iterator[None]:
    """Silence the Trainer's information lines (devices, precision): the real Trainer,
    built once the preflight has passed, says them once."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def global_batch_size(cfg: DictConfig) -> object:
    """``data.batch_size`` where it is the global batch, split over the data-parallel ranks
    (scaletrain's data modules); None for a data module of the user's, whose loaders
    Lightning's DistributedSampler distributes, each rank taking its own batches."""
    try:
        sharded = issubclass(get_class(cfg.data._target_), ShardedDataModule)
    except Exception:  # no such target: instantiate reports that
        return None
    return resolved(cfg, "data.batch_size") if sharded else None


def check_trainer(cfg: DictConfig) -> tuple[list[str], ParallelLayout | None]:
    """What Lightning's Trainer refuses among its arguments (devices, accelerator, precision
    and the rest), found by building it without callbacks or loggers, which starts no
    process; and the parallel layout on the number of processes Lightning resolved."""
    try:
        layout = ParallelLayout.of(cfg.strategy, world_size(cfg.trainer))
        problems = layout.problems(
            cfg.strategy.name,
            global_batch_size(cfg),
            devices=f"trainer.devices={render(cfg.trainer.devices)}",
        )
        strategy = "auto" if problems else build_strategy(cfg.strategy, layout)[0]
        with quiet_lightning():
            instantiate(
                cfg.trainer,
                strategy=strategy,
                callbacks=[],
                logger=False,
                enable_checkpointing=False,
            )
    except Exception as error:
        objection = lightning_objection(error)
        if objection is None:
            raise
        settings = ", ".join(f"{key}={cfg.trainer.get(key)}" for key in DEVICE_SETTINGS)
        (message,) = objection.problems
        return [message.replace("trainer:", f"trainer ({settings}):", 1)], None
    return problems, (None if problems else layout)


def check_strategy_options(cfg: DictConfig) -> list[str]:
    """The sharded strategies' own options."""
    problems = []
    mixed = cfg.strategy.get("mixed_precision")
    if mixed is not None and mixed not in ("bf16", "fp16", "fp32"):
        problems.append(f"strategy.mixed_precision={mixed}: valid: null, bf16, fp16, fp32")
    accelerator = accelerator_type(cfg.trainer)
    if cfg.strategy.get("cpu_offload") and accelerator != "gpu":
        problems.append(
            "strategy.cpu_offload=true: offloads from GPU memory, but this run is on "
            f"{accelerator}; valid here: false"
        )
    return problems


def blocks_needed_by(cfg: DictConfig) -> str | None:
    """The setting that needs the net's blocks, if one does."""
    if cfg.strategy.name == "pipeline":
        return "strategy=pipeline"
    for option in ("activation_checkpointing", "compile"):
        if OmegaConf.select(cfg, f"model.{option}"):
            return f"model.{option}=true"
    return None


def check_net(cfg: DictConfig, layout: ParallelLayout | None) -> list[str]:
    """The net can be built (on the meta device: no memory), and its plan
    (``model.parallel``, or the net's own) fits it and what the strategy needs of it:
    blocks where they are needed, tensor-parallel patterns that match and sizes that the
    degree divides, a block for every pipeline stage."""
    net_cfg = OmegaConf.select(cfg, "model.net")
    if not isinstance(net_cfg, DictConfig) or "_target_" not in net_cfg:
        return []
    OmegaConf.to_container(net_cfg, resolve=True)  # unresolvable: check_references says so
    try:
        with torch.device("meta"):
            net = build_net(net_cfg)
    except Exception as raised:
        error = unwrap_instantiation(raised)
        if isinstance(error, ModuleNotFoundError):
            return [str(error)]
        message = " ".join(str(error).split())
        if message.startswith("model.net."):  # the net names the setting itself
            return [message]
        return [f"model.net: {net_cfg._target_} could not be built: {message}"]
    declared = OmegaConf.select(cfg, "model.parallel")
    try:
        plan = NetPlan.of(net, OmegaConf.to_container(declared, resolve=True) if declared else None)
    except ValueError as error:
        return [str(error)]
    tp = layout.tensor_parallel_size if layout else 1
    pp = layout.pipeline_parallel_size if layout else 1
    problems = plan.problems(net, blocks_needed_by(cfg), tp, pp)
    if pp > 1 and not problems:
        blocks, per_rank = cfg.strategy.get("stage_blocks"), stages_per_rank_of(cfg.strategy)
        problems += split_problems(
            len(plan.block_container(net)),
            f"model.parallel.blocks={plan.blocks}",
            pp,
            None if blocks is None else list(blocks),
            per_rank if isinstance(per_rank, int) and per_rank > 0 else 1,
        )
    return problems


def check_pipeline(cfg: DictConfig, layout: ParallelLayout) -> list[str]:
    """The schedule exists, and the net has a block for every stage."""
    if cfg.strategy.name != "pipeline":
        return []
    problems = []
    schedule = cfg.strategy.get("pipeline_schedule")
    if schedule not in SCHEDULES:
        problems.append(
            f"strategy.pipeline_schedule={schedule}: unknown; valid: {', '.join(SCHEDULES)}"
        )
    stages, microbatches = layout.pipeline_parallel_size, layout.microbatches
    if schedule == "1f1b" and microbatches < stages:
        problems.append(
            f"strategy.microbatches={microbatches}: 1f1b needs at least one microbatch per "
            f"stage ({stages}); valid: {stages} or more, or strategy.pipeline_schedule=gpipe"
        )
    problems += several_stages_problems(cfg.strategy, layout)
    if cfg.strategy.get("distributed_checkpoint") is False:
        problems.append(
            "strategy.distributed_checkpoint=false: each pipeline stage saves its own "
            "parameters; valid under strategy=pipeline: true (scaletrain.consolidate makes "
            "one file)"
        )
    return problems


def stages_per_rank_of(strategy_cfg: DictConfig) -> Any:
    return stages_per_rank(
        strategy_cfg.get("pipeline_schedule"), strategy_cfg.get("stages_per_rank")
    )


def several_stages_problems(strategy_cfg: DictConfig, layout: ParallelLayout) -> list[str]:
    """What the schedules of several stages per rank need: a count that fits the schedule,
    microbatches in rounds of the pipeline's ranks, and, for the zero-bubble ones, no
    FSDP2 (which would reduce the gradients of the weights before they are computed)."""
    schedule, per_rank = strategy_cfg.get("pipeline_schedule"), stages_per_rank_of(strategy_cfg)
    ranks, microbatches = layout.pipeline_parallel_size, layout.microbatches
    several = (*LOOPED, *V_SHAPED)
    if not isinstance(per_rank, int) or per_rank < 1:
        return [f"strategy.stages_per_rank={per_rank}: valid: 1 or more, or null"]
    if schedule not in several and per_rank != 1:
        return [
            f"strategy.stages_per_rank={per_rank}: {schedule} runs one stage per rank; valid: "
            f"1 (or null), or strategy.pipeline_schedule={' | '.join(several)}"
        ]
    if schedule in LOOPED and per_rank < 2:
        return [
            f"strategy.stages_per_rank={per_rank}: {schedule} interleaves several stages on "
            "each rank; valid: 2 or more (or null), or strategy.pipeline_schedule=1f1b"
        ]
    if schedule in V_SHAPED and per_rank != 2:
        return [
            f"strategy.stages_per_rank={per_rank}: {schedule} places 2 stages on each rank "
            "(in a V); valid: 2 (or null)"
        ]
    problems = []
    if schedule in LOOPED and microbatches % ranks:
        problems.append(
            f"strategy.microbatches={microbatches}: {schedule} runs microbatches in rounds of "
            f"the pipeline's {ranks} ranks; valid: a multiple of {ranks}"
        )
    sharded = (
        layout.data_parallel_size > 1
        or strategy_cfg.get("mixed_precision") is not None
        or strategy_cfg.get("cpu_offload")
    )
    if schedule in ZERO_BUBBLE and sharded:
        problems.append(
            f"strategy.pipeline_schedule={schedule}: computes the weights' gradients apart "
            "from FSDP2's gradient reduction; valid with a data-parallel size of 1 (here "
            f"{layout.data_parallel_size}), no strategy.mixed_precision and no "
            "strategy.cpu_offload; or strategy.pipeline_schedule=interleaved_1f1b"
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


def missing_keys(node: DictConfig | ListConfig, path: str = "") -> Iterator[str]:
    """The required settings (``???``) left unset, found without resolving references
    (``OmegaConf.missing_keys`` resolves them, and stops at one that refers to a required
    setting)."""
    for key in range(len(node)) if isinstance(node, ListConfig) else node:
        full_key = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}".lstrip(".")
        if OmegaConf.is_missing(node, key):
            yield full_key
        elif not OmegaConf.is_interpolation(node, key):
            child = compat.child_node(node, key)
            if isinstance(child, DictConfig | ListConfig) and not compat.is_none_node(child):
                yield from missing_keys(child, full_key)


# Loggers that need an optional extra: the package they import, and the extra.
LOGGER_EXTRAS = {
    "lightning.pytorch.loggers.MLFlowLogger": ("mlflow", "mlflow"),
    "scaletrain.reporting.wandb.QuietWandbLogger": ("wandb", "wandb"),
}


def check_loggers(cfg: DictConfig) -> list[str]:
    """Every logger's package is installed (an optional extra's: named with its install)."""
    problems = []
    for name, entry in (cfg.get("logger") or {}).items():
        target = entry.get("_target_") if isinstance(entry, DictConfig) else None
        package, extra = LOGGER_EXTRAS.get(target, (None, None))
        if package is not None and importlib.util.find_spec(package) is None:
            problems.append(
                f"logger.{name} needs {package}, the optional extra '{extra}': "
                f"pip install -e '.[{extra}]'"
            )
    return problems


def check_references(cfg: DictConfig) -> list[str]:
    """Required values are set and every ``${...}`` reference resolves."""
    missing = sorted(missing_keys(cfg))
    required = [f"{key} is required: set it on the command line, e.g. {key}=..." for key in missing]
    try:
        OmegaConf.to_container(cfg.model, resolve=True)
        OmegaConf.to_container(cfg.data, resolve=True)
    except InterpolationToMissingValueError:
        return required  # a reference to a required setting: naming that one is enough
    except InterpolationResolutionError as error:
        return [
            f"{error.full_key}: refers to a setting that does not exist ({error.msg}); the "
            f"chosen groups do not fit together (model=mlp or cnn goes with data=digits, "
            f"mnist or synthetic; model=gpt or hf_causal_lm with data=text or tokens)"
        ]
    return required


def pretrained_vocab_size(directory: object) -> object:
    """The vocabulary of the checkpoint in ``model.net.pretrained``, where it says one."""
    try:
        config = json.loads((Path(str(directory)).expanduser() / "config.json").read_text())
    except (OSError, ValueError):
        return None  # the net's own check says what is wrong with the directory
    return config.get("vocab_size") if isinstance(config, dict) else None


def check_vocabulary(cfg: DictConfig) -> list[str]:
    """The net's vocabulary is the data's (for token data, the tokenizer's); a checkpoint
    the net starts from holds every token of the data."""
    data_vocab = resolved(cfg, "data.vocab_size")
    pretrained = resolved(cfg, "model.net.pretrained")
    if pretrained is not None:
        net_vocab = pretrained_vocab_size(pretrained)
        if isinstance(data_vocab, int) and isinstance(net_vocab, int) and data_vocab > net_vocab:
            return [
                f"model.net.pretrained={pretrained}: its vocabulary has {net_vocab} tokens, the "
                f"data {data_vocab} (data.dir={resolved(cfg, 'data.dir')}); prepare the corpus "
                f"with its tokenizer: python -m scaletrain.prepare <files> --tokenizer "
                f"{pretrained} --out <dir>"
            ]
        return []
    net_vocab = resolved(cfg, "model.net.vocab_size")
    if isinstance(data_vocab, int) and isinstance(net_vocab, int) and data_vocab != net_vocab:
        directory = resolved(cfg, "data.dir")
        source = f" (the tokenizer of data.dir={directory})" if directory else ""
        return [
            f"model.net.vocab_size={net_vocab}: the data has data.vocab_size={data_vocab} "
            f"tokens{source}; use {data_vocab}"
        ]
    return []


def resolved(cfg: DictConfig, key: str) -> object:
    """The value of ``key``, or None where it is unset or refers to a missing setting
    (which :func:`check_references` reports)."""
    try:
        return OmegaConf.select(cfg, key)
    except OmegaConfBaseException:
        return None


def guarded(check: Callable[..., list[str]], *args) -> list[str]:
    """``check``'s problems; none where it trips over an unresolvable setting, which
    :func:`check_references` has reported already."""
    try:
        return check(*args)
    except OmegaConfBaseException:
        return []


def setting_of(problem: str) -> str:
    """The setting a problem line names: ``trainer.max_epochs`` of ``trainer.max_epochs=x: ...``."""
    return problem.split("=", 1)[0].split(":", 1)[0]


def validate(cfg: DictConfig) -> list[str]:
    """Every problem found in ``cfg``, one line each, naming the setting and what is valid."""
    typed = type_problems(cfg)
    mistyped = {setting_of(problem) for problem in typed}
    values = guarded(check_values, cfg, mistyped)
    problems = check_references(cfg) + typed + values
    problems += guarded(check_monitor, cfg) + guarded(check_strategy_options, cfg)
    problems += guarded(check_vocabulary, cfg) + guarded(check_loggers, cfg)
    # Lightning's Trainer and the layout are judged once the settings they take have the
    # right types and ranges (each problem is reported once, by the clearer check)
    wrong = mistyped | {setting_of(problem) for problem in values}
    layout = None
    if not any(setting.startswith("trainer.") or setting == "data.batch_size" for setting in wrong):
        trainer_problems, layout = guarded(check_trainer, cfg) or ([], None)
        problems += trainer_problems
        if layout is not None:
            problems += guarded(check_pipeline, cfg, layout)
    problems += guarded(check_data_files, cfg)
    if layout is not None and not problems:  # the net is built from settings found right
        problems += guarded(check_net, cfg, layout)
    return problems
