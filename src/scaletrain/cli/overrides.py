"""Command-line overrides checked before Hydra runs anything: every unknown group option
and every unknown or mistyped key is reported at once, one line each, with the valid
options or the closest known key.

Hydra stops at the first bad override with a message of several lines. This check first
composes the config with all the overrides, as Hydra will; only where that fails does it
read them one by one, with Hydra's own parser, judging each key against the config that
the valid group choices compose, so a key is judged against the config the run would
really have. Anything it cannot judge is left to Hydra.
"""

import difflib
import inspect
import sys
from functools import cache
from pathlib import Path

import lightning as L
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import DictConfig, ListConfig, OmegaConf

from scaletrain import compat
from scaletrain.config import CONFIG_DIR

# Hydra's own flags; with any but these, the overrides are left to Hydra alone.
PLAIN_FLAGS = ("-m", "--multirun")


def group_options(config_dir: Path, group: str) -> list[str]:
    """The options of ``group``, nested ones as ``folder/name``."""
    directory = config_dir / group
    return sorted(
        str(path.relative_to(directory).with_suffix("")) for path in directory.rglob("*.yaml")
    )


def chosen_options(override: Override) -> list[str]:
    """The options a group override names: one, a list (``callbacks=[a,b]``) or a sweep."""
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    value = override.value()
    values = value if isinstance(value, list) else [value]
    return ["null" if v is None else str(v) for v in values]


def option_problems(override: Override, config_dir: Path) -> list[str]:
    """Options of a config group that do not exist."""
    group = override.key_or_group
    valid = group_options(config_dir, group)
    return [
        f"{group}={option}: no such option; valid: {', '.join(valid)}"
        for option in chosen_options(override)
        if option not in valid
    ]


def known_key(cfg: DictConfig, key: str, groups: list[str]) -> str | None:
    """None if ``key`` is in ``cfg``; otherwise what is wrong with it and what is valid."""
    node, parts = cfg, key.split(".")
    for depth, part in enumerate(parts):
        if isinstance(node, ListConfig) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if isinstance(node, DictConfig) and part in node.keys():  # noqa: SIM118 (`in node` skips ??? values)
            node = compat.child_node(node, part)
            continue
        parent = ".".join(parts[:depth])
        if isinstance(node, ListConfig):
            return f"{key}: {parent} is a list of {len(node)}; valid indices: 0 to {len(node) - 1}"
        if not isinstance(node, DictConfig) or compat.is_none_node(node):
            return f"{key}: {parent} is a single value, not settings; set {parent}=... instead"
        siblings = sorted({str(k) for k in node} | set(groups if depth == 0 else []))
        (match, *_) = difflib.get_close_matches(part, siblings, n=1, cutoff=0.6) or [None]
        if match is not None:
            guess = ".".join([*parts[:depth], match, *parts[depth + 1 :]])
            return f"{key}: unknown setting; did you mean {guess}?"
        where = f"under {parent}" if parent else "at the top level"
        return f"{key}: unknown setting; valid {where}: {', '.join(siblings)}"
    return None


def one_run(override: Override, text: str) -> str | None:
    """``text`` as one run of a sweep sees it: its first option; None where a sweep
    cannot be enumerated (``interval``, which only a sweeper samples)."""
    if not override.is_sweep_override():
        return text
    try:
        return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
    except HydraException:
        return None


def composes(config_dir: Path, config_name: str, overrides: list[str]) -> bool:
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose(config_name, overrides=overrides)
    except Exception:  # Hydra and OmegaConf raise many kinds for a bad override
        return False
    return True


def override_problems(config_dir: Path, config_name: str, args: list[str]) -> list[str]:
    """Every unknown group option and unknown key among the command-line ``args``; none
    where the config composes with them, as Hydra would compose it."""
    if any(arg.startswith("-") and arg not in PLAIN_FLAGS for arg in args):
        return []
    texts = [arg for arg in args if arg not in PLAIN_FLAGS]
    try:
        overrides = OverridesParser.create().parse_overrides(texts)
    except HydraException:
        return []  # bad syntax: Hydra's own message points at the character
    runs = [one_run(override, text) for override, text in zip(overrides, texts, strict=True)]
    groups = sorted(path.name for path in config_dir.iterdir() if path.is_dir())
    # options of our groups (every option of a sweep), unless configs come from elsewhere too
    searchpath = any(o.key_or_group == "hydra.searchpath" for o in overrides)
    options = {
        index: [] if searchpath else option_problems(override, config_dir)
        for index, override in enumerate(overrides)
        if override.key_or_group in groups and not override.is_delete()
    }
    problems = [problem for found in options.values() for problem in found]
    if composes(config_dir, config_name, [text for text in runs if text]):
        return problems

    # Explain what went wrong, override by override.
    composable, keys = [], []
    for index, (override, text) in enumerate(zip(overrides, runs, strict=True)):
        name = override.key_or_group
        if name.startswith("hydra") or override.is_delete() or text is None:
            continue  # Hydra's settings, deletions and sampled sweeps: left to Hydra
        if override.is_add() or override.is_force_add():
            composable.append(text)  # added keys exist for the overrides after them
        elif index in options:
            if not options[index]:
                composable.append(text)
        else:
            keys.append(name)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name, overrides=composable)
    return problems + [p for key in keys if (p := known_key(cfg, key, groups))]


def exit_on_unknown_overrides(config_dir: str, config_name: str, args: list[str]) -> None:
    """Print every problem of :func:`override_problems` and exit with status 2."""
    try:
        problems = override_problems(Path(config_dir), config_name, args)
    except Exception:  # overrides that do not compose even without the bad ones
        return  # Hydra reports them itself
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        sys.exit(2)


@cache
def trainer_arguments() -> frozenset[str]:
    """The arguments of Lightning's Trainer that the trainer config does not list; the
    ones it sets itself from other groups (strategy, callbacks, loggers) left out."""
    listed = OmegaConf.load(Path(CONFIG_DIR) / "trainer" / "default.yaml").keys()
    own = {"strategy", "callbacks", "logger", "plugins"}
    return frozenset(set(inspect.signature(L.Trainer).parameters) - set(listed) - own)


def add_trainer_arguments(args: list[str]) -> list[str]:
    """``trainer.<arg>=...`` for any argument of Lightning's Trainer, as a Lightning user
    expects, though the trainer config lists only the common ones: such an override is
    passed on as ``++trainer.<arg>=...`` (set, or add where the config lacks it)."""
    rewritten = []
    for arg in args:
        key, equals, _ = arg.partition("=")
        parts = key.split(".")
        if equals and len(parts) == 2 and parts[0] == "trainer" and parts[1] in trainer_arguments():
            arg = f"++{arg}"
        rewritten.append(arg)
    return rewritten


def check_command_line(config_name: str, args: list[str], report: bool = True) -> list[str]:
    """The command line's arguments, any Trainer argument made settable; where ``report``
    (one process per machine: the other ranks run the same command line), every unknown
    option or key is printed and the command exits with status 2."""
    args = add_trainer_arguments(args)
    if report:
        exit_on_unknown_overrides(CONFIG_DIR, config_name, args)
    return args
