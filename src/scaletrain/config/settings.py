"""Settings checked against the type annotations of the code that takes them.

Every config node with a ``_target_`` (the Trainer, the data module, the net, the
optimizer, callbacks, loggers) is instantiated by calling that target with the node's
keys, so the target's own signature says what each key must be: ``trainer.max_epochs``
is ``Optional[int]`` in Lightning's Trainer, ``model.net.num_heads`` an ``int`` in the
GPT. A value of the wrong type is reported before any process starts, instead of
surfacing later as a traceback (Lightning accepts ``max_epochs="abc"`` and fails mid-run).
"""

import inspect
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from scaletrain import compat

SEQUENCES = (list, tuple, Sequence, typing.Sequence)
MAPPINGS = (dict, Mapping, typing.Mapping)
PLAIN_TYPES = (bool, int, float, str, *SEQUENCES, *MAPPINGS)
# Keys of a Hydra node that configure instantiation itself, not the target.
HYDRA_KEYS = ("_target_", "_partial_", "_recursive_", "_convert_", "_args_")


def targets(node: Any, path: str = "") -> Iterator[tuple[str, DictConfig]]:
    """Every node under ``node`` (itself included) that has a ``_target_``, by dotted path."""
    if not isinstance(node, DictConfig):
        return
    if "_target_" in node:
        yield path, node
    for key in node:
        if path == "" and key == "hydra":
            continue
        child = compat.child_node(node, key)
        if isinstance(child, DictConfig) and not compat.is_none_node(child):
            yield from targets(child, f"{path}.{key}" if path else str(key))


def parameter_hints(target: Any) -> dict[str, Any]:
    """The annotated parameters of a callable, or of a class's ``__init__`` (following
    ``**kwargs`` up to the parent classes that receive them)."""
    functions = [target]
    if inspect.isclass(target):
        functions = [cls.__init__ for cls in target.__mro__ if "__init__" in vars(cls)]
    hints: dict[str, Any] = {}
    for function in functions:
        try:
            annotations = typing.get_type_hints(function)
            parameters = inspect.signature(function).parameters.values()
        except Exception:  # unresolvable forward references, builtins without signatures
            break
        for parameter in parameters:
            if parameter.name in annotations and parameter.name not in hints:
                hints[parameter.name] = annotations[parameter.name]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break  # no **kwargs: the parents' parameters are not reachable
    return hints


def judged(hint: Any) -> bool:
    """Whether :func:`fits` can judge a config value against ``hint``: config values are
    plain numbers, strings, booleans, lists, dicts and null, never other objects."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(judged(arg) for arg in typing.get_args(hint))
    return origin is typing.Literal or (origin or hint) in PLAIN_TYPES or hint is type(None)


def fits(value: Any, hint: Any) -> bool:
    """Whether a plain config value is acceptable for the annotation ``hint``. In a union,
    only the members a config value could be count (``float | Tensor``: a number);
    an annotation with none of them (``Path``) accepts anything."""
    if not judged(hint):
        return True
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is type(None):
        return value is None
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, arg) for arg in args if judged(arg))
    if origin is typing.Literal:
        return any(type(value) is type(arg) and value == arg for arg in args)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    container = origin or hint
    if container in SEQUENCES:
        if not isinstance(value, list | tuple):
            return False
        if container is tuple and args and args[-1] is not Ellipsis:
            return len(value) == len(args) and all(map(fits, value, args))
        return not args or all(fits(item, args[0]) for item in value)
    return isinstance(value, dict)  # a mapping


def alternatives(hint: Any) -> list[str]:
    """What ``hint`` accepts, as a list of words: ``["an integer", "null"]``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        words = [word for arg in args if judged(arg) for word in alternatives(arg)]
        if "a number" in words:  # a number includes the integers
            words = [word for word in words if word != "an integer"]
        return list(dict.fromkeys(words))
    if origin is typing.Literal:
        return [str(arg) for arg in args]
    if (origin or hint) in SEQUENCES:
        return [f"a list of {plural(describe(args[0]))}" if args else "a list"]
    names = {
        bool: ["true", "false"],
        int: ["an integer"],
        float: ["a number"],
        str: ["a string"],
        type(None): ["null"],
    }
    return names.get(hint, ["a mapping"] if (origin or hint) in MAPPINGS else [])


def describe(hint: Any) -> str:
    """What ``hint`` accepts, in words: ``an integer or null``."""
    words = alternatives(hint)
    if "null" in words:  # last, where a reader looks for it
        words = [word for word in words if word != "null"] + ["null"]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def plural(words: str) -> str:
    """``an integer`` -> ``integers``; ``a number`` -> ``numbers``."""
    for article in ("an ", "a "):
        if words.startswith(article):
            return words[len(article) :] + "s"
    return words


def type_problems(cfg: DictConfig) -> list[str]:
    """One line for every setting whose value does not fit its target's annotation."""
    problems = []
    for path, node in targets(cfg):
        try:
            target = get_object(node._target_)
        except Exception:  # no such target: instantiation reports it
            continue
        hints = parameter_hints(target)
        for key in node:
            if key in HYDRA_KEYS or key not in hints or OmegaConf.is_interpolation(node, key):
                continue  # a reference is checked where its value is set
            child = compat.child_node(node, key)
            if isinstance(child, DictConfig) and "_target_" in child:
                continue  # a nested object, checked on its own
            try:
                value = plain_value(node, key)
            except Exception:  # an unresolvable reference: check_references reports it
                continue
            if not fits(value, hints[key]):
                problems.append(f"{path}.{key}={render(value)}: must be {describe(hints[key])}")
    return problems


def plain_value(node: DictConfig, key: str) -> Any:
    """``node[key]`` resolved, containers as plain lists and dicts."""
    child = compat.child_node(node, key)
    if isinstance(child, DictConfig | ListConfig):
        return OmegaConf.to_container(child, resolve=True)
    return node[key]


def render(value: Any) -> str:
    """A value as it is written on the command line: ``[32, 64]``, ``null``, ``abc``."""
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ",".join(render(item) for item in value) + "]"
    return str(value)
