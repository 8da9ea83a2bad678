"""Lower precision under fsdp on CPU: FSDP2's bf16 parameters (``strategy.mixed_precision``)
and Lightning's bf16 autocast (``trainer.precision=bf16-mixed``) both train, keep fp32
master weights, and stay close to fp32 training of the same batches."""

import pytest
import torch

from tests.helpers import final_weights, run_cli, run_here, step_losses

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

FSDP = [
    "strategy=fsdp",
    "trainer.devices=2",
    "trainer.max_steps=8",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "test=false",
]


@pytest.fixture(scope="module")
def fp32(tmp_path_factory):
    # one process, in this process: fsdp on 2 ranks equals it within 1e-5 (test_parity)
    root = tmp_path_factory.mktemp("fp32")
    single = [o for o in FSDP if not o.startswith(("strategy=", "trainer.devices="))]
    run = run_here("train", root / "fp32", f"paths.root_dir={root}", *single)
    assert run.returncode == 0, run.output
    return run


@pytest.mark.parametrize(
    "setting", ["strategy.mixed_precision=bf16", "trainer.precision=bf16-mixed"]
)
def test_bf16_under_fsdp_trains_close_to_fp32(tmp_path, fp32, setting):
    run = run_cli("train", tmp_path / "run", f"paths.root_dir={tmp_path}", *FSDP, setting)
    assert run.returncode == 0, run.output
    losses, reference = step_losses(run), step_losses(fp32)
    assert len(losses) == len(reference) == 8
    # bf16 keeps 8 bits of mantissa: close to fp32, and really lower precision
    differences = [abs(a - b) for a, b in zip(losses, reference, strict=True)]
    assert max(differences) < 0.05, differences
    assert max(differences) > 0, "bf16 computed exactly what fp32 did: was it applied?"
    weights = final_weights(run)
    assert all(tensor.dtype == torch.float32 for tensor in weights.values())  # fp32 masters
