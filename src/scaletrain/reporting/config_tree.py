"""The composed config as a tree on the console (``print_config=true``): one branch per
top-level setting, the groups that make a run first."""

import rich
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from rich.syntax import Syntax
from rich.tree import Tree

FIRST = ("data", "model", "strategy", "trainer", "callbacks", "logger", "paths")


def as_yaml(cfg: DictConfig, key: str) -> str:
    """Setting ``key`` of ``cfg`` as YAML, its references resolved where they resolve."""
    try:
        value = cfg[key]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
    except OmegaConfBaseException:  # a reference to an unset value: shown as written
        value = OmegaConf.to_container(OmegaConf.masked_copy(cfg, [key]))[key]
    return OmegaConf.to_yaml({key: value})


def config_tree(cfg: DictConfig) -> Tree:
    tree = Tree("config", guide_style="dim")
    keys = [key for key in FIRST if key in cfg] + [key for key in cfg if key not in FIRST]
    for key in keys:
        tree.add(Syntax(as_yaml(cfg, key).rstrip(), "yaml", background_color="default"))
    return tree


def print_config(cfg: DictConfig) -> None:
    rich.print(config_tree(cfg))
