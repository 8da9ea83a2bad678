"""What the sharded strategies need to know about a net, as data: the ``model.parallel``
node of the model's config, or the same from the net's own ``parallel_plan()`` method
(the config's entries win), for any plain ``nn.Module``:

    blocks: layers                 # attribute path of the repeated blocks (found if omitted)
    tensor_parallel:               # module-name patterns -> how each layer is split
      "layers.*.attn.qkv": colwise
      "layers.*.attn.out": rowwise
    pipeline:
      first: [embed]               # modules before the blocks: on the first stage
      last: [norm, head]           # modules after them: on the last stage
    tensor_parallel_divides:       # sizes the tensor-parallel degree must divide
      model.net.num_heads: 4

No code path knows a net by its class: the built-in nets declare theirs the same way.
"""

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from scaletrain.parallel.layout import divisors

# How a layer is split across a tensor-parallel group (see scaletrain.parallel.plans):
# its weight's dimension that is cut (None: nothing is cut).
STYLES: dict[str, int | None] = {
    "colwise": 0,  # output features split; the output stays split
    "colwise_gather": 0,  # output features split, the output gathered whole
    "rowwise": 1,  # input features split, partial outputs summed
    "embedding": 0,  # vocabulary rows split, lookups summed
    "replicate": None,  # whole on every rank of the group
}
# The names Hugging Face's tensor-parallel plans use for the same styles.
ALIASES = {
    "colwise_gather_output": "colwise_gather",
    "colwise_rep": "colwise_gather",
    "embedding_rowwise": "embedding",
}
PLAN_KEYS = ("blocks", "tensor_parallel", "pipeline", "tensor_parallel_divides")


def style_name(style: str) -> str:
    return ALIASES.get(style, style)


def pattern_regex(pattern: str) -> re.Pattern:
    """``layers.*.attn.q`` as a regex: ``*`` stands for one part of a dotted name."""
    return re.compile("[^.]+".join(re.escape(part) for part in pattern.split("*")))


def matching(net: nn.Module, pattern: str) -> list[str]:
    """The names of ``net``'s modules that ``pattern`` matches whole."""
    regex = pattern_regex(pattern)
    return [name for name, _ in net.named_modules() if name and regex.fullmatch(name)]


def has_own_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def holds_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def find_blocks(net: nn.Module) -> str | None:
    """The attribute path of the net's repeated blocks, where it has them: the
    ``ModuleList`` (or ``Sequential`` of two or more) holding the most parameters whose
    children that hold parameters are all of one type."""
    best, best_size = None, 0
    for name, module in net.named_modules():
        if not name or not isinstance(module, nn.ModuleList | nn.Sequential):
            continue
        children = [child for child in module if holds_parameters(child)]
        least = 1 if isinstance(module, nn.ModuleList) else 2
        if len(children) < least or len({type(child) for child in children}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > best_size:
            best, best_size = name, size
    return best


def containers(net: nn.Module) -> list[str]:
    """The net's ModuleLists and Sequentials, by name: what ``blocks`` may name."""
    return [
        name
        for name, module in net.named_modules()
        if name and isinstance(module, nn.ModuleList | nn.Sequential)
    ]


@dataclass(frozen=True)
class NetPlan:
    """How a net is cut into units (blocks), split across a tensor-parallel group and cut
    into pipeline stages. ``blocks_found`` says that ``blocks`` was found, not declared."""

    blocks: str | None = None
    tensor_parallel: Mapping[str, str] = field(default_factory=dict)
    first: tuple[str, ...] = ()
    last: tuple[str, ...] = ()
    tensor_parallel_divides: Mapping[str, int] = field(default_factory=dict)
    blocks_found: bool = False

    @classmethod
    def of(cls, net: nn.Module, declared: Mapping[str, Any] | None) -> "NetPlan":
        """The plan of ``net``: its ``parallel_plan()`` (where it has one) overridden key by
        key by ``declared`` (``model.parallel``), the blocks found where neither names
        them. Raises ValueError for a key that is not one of :data:`PLAN_KEYS`."""
        own = getattr(net, "parallel_plan", None)
        merged = {**(own() if callable(own) else {}), **(declared or {})}
        unknown = sorted(set(merged) - set(PLAN_KEYS))
        if unknown:
            raise ValueError(f"model.parallel.{unknown[0]}: unknown; valid: {', '.join(PLAN_KEYS)}")
        pipeline = merged.get("pipeline") or {}
        blocks = merged.get("blocks")
        found = blocks is None
        return cls(
            blocks=find_blocks(net) if found else blocks,
            tensor_parallel={
                pattern: style_name(style)
                for pattern, style in (merged.get("tensor_parallel") or {}).items()
            },
            first=tuple(pipeline.get("first") or ()),
            last=tuple(pipeline.get("last") or ()),
            tensor_parallel_divides=dict(merged.get("tensor_parallel_divides") or {}),
            blocks_found=found,
        )

    def block_container(self, net: nn.Module) -> nn.Module | None:
        return None if self.blocks is None else net.get_submodule(self.blocks)

    def units(self, net: nn.Module) -> Iterator[nn.Module]:
        """The blocks that hold parameters: the units of FSDP2 sharding, activation
        checkpointing and compilation (a pipeline stage's stand-ins hold none)."""
        container = self.block_container(net)
        for block in container if container is not None else ():
            if holds_parameters(block):
                yield block

    def tensor_parallel_styles(self, net: nn.Module) -> dict[str, str]:
        """The style of each module of ``net`` that holds parameters, by its name: those
        the patterns match, and ``replicate`` for every other module that holds
        parameters of its own (so that every parameter lives on the tensor-parallel
        mesh, as FSDP2 and clipping over all parameters need)."""
        styles: dict[str, str] = {}
        for pattern, style in self.tensor_parallel.items():
            for name in matching(net, pattern):
                if has_own_parameters(net.get_submodule(name)):
                    styles[name] = style
        for name, module in net.named_modules():
            if name not in styles and has_own_parameters(module):
                styles[name] = "replicate"
        return dict(sorted(styles.items()))

    def problems(self, net: nn.Module, needs_blocks: str | None, tp: int, pp: int) -> list[str]:
        """What keeps this plan from fitting ``net`` (built whole, on the meta device):
        ``needs_blocks`` names the setting that needs blocks (e.g. ``strategy=pipeline``),
        ``tp`` and ``pp`` are the tensor-parallel and pipeline degrees."""
        net_name = type(net).__name__
        modules = dict(net.named_modules())
        if self.blocks is not None and not isinstance(
            modules.get(self.blocks), nn.ModuleList | nn.Sequential
        ):
            valid = ", ".join(containers(net)) or "none: put the blocks in an nn.ModuleList"
            return [
                f"model.parallel.blocks={self.blocks}: {net_name} has no ModuleList or "
                f"Sequential of that name; valid: {valid} (or leave it out to have it found)"
            ]
        problems = []
        if self.blocks is None and needs_blocks:
            problems.append(
                f"{needs_blocks}: {net_name} has no repeated blocks (a ModuleList or "
                f"Sequential of like modules); name them with model.parallel.blocks=<path>"
            )
        for setting, names in (("first", self.first), ("last", self.last)):
            for name in names:
                if name not in modules:
                    problems.append(
                        f"model.parallel.pipeline.{setting}: {net_name} has no module {name}"
                    )
        for pattern, style in self.tensor_parallel.items():
            if style not in STYLES:
                problems.append(
                    f'model.parallel.tensor_parallel."{pattern}"={style}: unknown style; '
                    f"valid: {', '.join(STYLES)}"
                )
            elif not matching(net, pattern):
                problems.append(
                    f'model.parallel.tensor_parallel."{pattern}": matches no module of {net_name}'
                )
            elif not any(has_own_parameters(modules[n]) for n in matching(net, pattern)):
                problems.append(
                    f'model.parallel.tensor_parallel."{pattern}": matches only modules that '
                    f"hold no parameters of their own ({matching(net, pattern)[0]}, ...); name "
                    "the layers inside them"
                )
        if tp > 1:
            problems += self._split_problems(net, tp)
        if pp > 1 and not problems:
            problems += self._stage_problems(net)
        return problems

    def _split_problems(self, net: nn.Module, tp: int) -> list[str]:
        """Every size the tensor-parallel degree ``tp`` splits divides by it."""
        problems = [
            f"strategy.tensor_parallel_size={tp} does not divide {setting}={size}; "
            f"valid: {divisors(size)}"
            for setting, size in self.tensor_parallel_divides.items()
            if size % tp
        ]
        for name, style in self.tensor_parallel_styles(net).items():
            dim = STYLES.get(style)
            weight = getattr(net.get_submodule(name), "weight", None)
            if dim is None or weight is None or weight.dim() <= dim:
                continue
            if weight.shape[dim] % tp:
                problems.append(
                    f"strategy.tensor_parallel_size={tp} does not divide {name}'s "
                    f"{'output' if dim == 0 else 'input'} size {weight.shape[dim]}, which "
                    f"{style} splits; valid: {divisors(weight.shape[dim])}"
                )
        return problems

    def _stage_problems(self, net: nn.Module) -> list[str]:
        """Every parameter belongs to the blocks or to the first or last modules."""
        owned = (*self.first, *self.last, *([self.blocks] if self.blocks else []))
        strays = sorted(
            {
                name.rpartition(".")[0] or name
                for name, _ in net.named_parameters()
                if not any(name.startswith(f"{prefix}.") for prefix in owned)
            }
        )
        if not strays:
            return []
        return [
            f"strategy=pipeline: {type(net).__name__}'s {', '.join(strays)} is in no stage; add "
            f"it to model.parallel.pipeline.first (before the blocks) or .last (after them)"
        ]
