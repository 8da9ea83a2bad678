"""The model-state memory measure counts exactly what a rank holds."""

import torch

from scaletrain.callbacks.memory import model_state_bytes
from scaletrain.nets.mlp import MLP


def test_model_state_bytes_counts_params_grads_and_adam_state():
    net = MLP(64, [64], 10)  # 64*64+64 + 64*10+10 = 4,810 parameters
    optimizer = torch.optim.Adam(net.parameters())
    net(torch.randn(8, 64)).sum().backward()
    optimizer.step()
    sizes = model_state_bytes(net, [optimizer])
    params = 4810 * 4
    # Adam keeps exp_avg and exp_avg_sq per parameter, plus one scalar step per tensor.
    assert sizes == {
        "params": params,
        "grads": params,
        "optimizer_state": 2 * params + 4 * 4,
        "model_state": 4 * params + 16,
    }
