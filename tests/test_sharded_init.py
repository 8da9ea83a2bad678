"""Under the sharded strategies the net is built on the meta device and each rank fills
only its own shards; the full initial weights are still bit for bit those of a single
process with the same seed, whatever the layout."""

import pytest
import torch

from scaletrain.config.build import build_model
from scaletrain.parallel.materialize import is_on_meta
from tests.helpers import compose_train, run_cli

LAYOUTS = {
    "pp2": ["strategy=pipeline", "trainer.devices=2"],  # each rank builds its stage only
    "fsdp4": ["strategy=fsdp", "trainer.devices=4"],
    "tp2": ["strategy=model_sharded", "trainer.devices=2", "strategy.tensor_parallel_size=2"],
    "dp2xtp2": ["strategy=model_sharded", "trainer.devices=4", "strategy.tensor_parallel_size=2"],
}
GPT = ["experiment=gpt_text", "model.net.dim=32", "model.net.num_layers=2", "data.max_bytes=50000"]
ONE_STEP = ["trainer.max_steps=1", "trainer.limit_val_batches=0", "test=false"]


def initial_weights(*overrides: str) -> dict[str, torch.Tensor]:
    """The initial weights of a single process, seeded as a run seeds it."""
    cfg = compose_train(*overrides)
    torch.manual_seed(cfg.seed)
    return build_model(cfg).net.state_dict()


def test_the_sharded_strategies_build_the_net_without_memory():
    assert is_on_meta(build_model(compose_train("strategy=fsdp")).net)
    assert is_on_meta(build_model(compose_train("strategy=model_sharded")).net)
    assert is_on_meta(build_model(compose_train("strategy=pipeline")).net)
    assert not is_on_meta(build_model(compose_train("strategy=ddp")).net)


def test_the_initial_weights_depend_on_the_seed_only():
    first, again = (initial_weights("seed=3") for _ in range(2))
    other = initial_weights("seed=4")
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not any(torch.equal(first[name], other[name]) for name in first)


@pytest.mark.slow
def test_every_layout_starts_from_the_single_process_weights(tmp_path):
    """The GPT: its shards are cut every way there is (rows, columns, FSDP2 over tensor
    parallel's strided shards). The MLP's rule is checked through the parity tests, whose
    1e-5 would not hold from other initial weights."""
    reference = initial_weights(*GPT)
    for layout, overrides in LAYOUTS.items():
        saved = tmp_path / f"{layout}.pt"
        callback = f"{{_target_: tests.initial_weights.SaveInitialWeights, path: {saved}}}"
        run = run_cli(
            "train",
            tmp_path / layout,
            *GPT,
            *overrides,
            *ONE_STEP,
            f"+callbacks.initial_weights={callback}",
        )
        assert run.returncode == 0, run.output
        weights = {}
        for rank_file in tmp_path.glob(f"{layout}.pt.rank*"):
            weights.update(torch.load(rank_file, weights_only=True))
        assert weights.keys() == reference.keys(), layout
        for name, tensor in reference.items():
            assert torch.equal(weights[name], tensor), f"{layout}: {name}"
