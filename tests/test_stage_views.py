"""Several stages on one rank: each runs on a view of the rank's net that shares its
modules, follows its training mode and computes what the whole net computes."""

import torch
from torch import nn

from scaletrain.parallel.net_plan import NetPlan
from scaletrain.parallel.pipeline import PipelineOptions, StageForward, keep_stages, stage_view


class Dropping(nn.Module):
    """Reads its own training flag in its forward, as many nets do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(4, 8)
        self.layers = nn.ModuleList(nn.Linear(8, 8) for _ in range(4))
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for layer in self.layers:
            x = layer(x)
        return self.head(x * 2 if self.training else x)


class Mesh:
    """The pipeline mesh's coordinate and size, as keep_stages reads them."""

    def __init__(self, rank: int, size: int) -> None:
        self.rank, self.size_ = rank, size

    def get_local_rank(self) -> int:
        return self.rank

    def size(self) -> int:
        return self.size_


def test_the_stages_of_one_rank_chain_to_the_whole_nets_output_in_either_mode():
    torch.manual_seed(0)
    whole = Dropping()
    plan = NetPlan.of(
        whole, {"blocks": "layers", "pipeline": {"first": ["embed"], "last": ["head"]}}
    )
    options = PipelineOptions(schedule="zbv_zero_bubble", stages_per_rank=2)
    # one rank of a V of one rank: stages 0 and 1, the first and the last
    net = Dropping()
    net.load_state_dict(whole.state_dict())
    relays = keep_stages(net, plan, Mesh(0, 1), options)
    assert [relay.index for relay in relays] == [0, 1]
    stages = []
    for relay in relays:
        view, copies = stage_view(net, plan, relay, 2)
        stages.append(StageForward(view, plan, relay, last=relay.index == 1, copies=copies))
    inputs = torch.randn(5, 4)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        getattr(whole, mode)()
        middle = stages[0](inputs=inputs)
        output = stages[1](middle, inputs=inputs)
        assert torch.equal(output, whole(inputs)), mode
    # the views share the net's modules: the parameters are the net's
    assert stages[0].net.layers[0] is net.layers[0]
    assert stages[1].net.head is net.head
    assert type(stages[1].net.embed).__name__ == "StandIn"
    assert type(net.embed).__name__ == "Linear"
