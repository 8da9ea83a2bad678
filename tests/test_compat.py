"""Canaries for the private library APIs scaletrain relies on (all in scaletrain.compat),
and proof that no other module reaches past a public API.

After upgrading Lightning, torch or OmegaConf: ``python -m pytest tests/test_compat.py``.
"""

import ast
import inspect
from pathlib import Path

import lightning.pytorch.strategies.launchers.subprocess_script as subprocess_script
import pytest
import torch
from lightning.pytorch.loops.progress import _BatchProgress
from lightning.pytorch.strategies import ModelParallelStrategy
from omegaconf import OmegaConf
from torch.distributed.device_mesh import DeviceMesh

from scaletrain import compat

SOURCE = Path(compat.__file__).parent
# scaletrain's Hydra launcher lives where Hydra looks for plugins
PLUGIN = SOURCE.parent / "hydra_plugins" / "scaletrain_launcher"
# Underscored names of the standard library that are public by documentation.
DOCUMENTED = {"os._exit", "sys._getframe"}


def test_lightning_still_builds_the_rank_command_with_the_hook_scaletrain_replaces():
    assert hasattr(subprocess_script, compat.RANK_COMMAND_HOOK), (
        f"lightning.pytorch.strategies.launchers.subprocess_script.{compat.RANK_COMMAND_HOOK} "
        "is gone: extra ranks of a sweep job would re-run the whole sweep; see "
        "scaletrain.compat.set_rank_command"
    )
    launcher = subprocess_script._SubprocessScriptLauncher
    source = inspect.getsource(launcher._call_children_scripts)
    assert f"{compat.RANK_COMMAND_HOOK}(local_rank)" in source, (
        "Lightning no longer calls the module-level rank command when it starts ranks: "
        "replacing it has no effect; see scaletrain.compat.set_rank_command"
    )
    original = getattr(subprocess_script, compat.RANK_COMMAND_HOOK)
    try:
        compat.set_rank_command(lambda local_rank: ([f"rank{local_rank}"], "/"))
        assert getattr(subprocess_script, compat.RANK_COMMAND_HOOK)(1) == (["rank1"], "/")
    finally:
        setattr(subprocess_script, compat.RANK_COMMAND_HOOK, original)


def test_lightning_launcher_still_keeps_the_started_processes():
    launcher = subprocess_script._SubprocessScriptLauncher(
        cluster_environment=None, num_processes=2, num_nodes=1
    )
    assert launcher.procs == [], "the launcher's `procs` list moved: ranks would not be awaited"


def test_the_fit_loops_batch_progress_still_counts_processed_batches_and_the_last_one():
    progress = _BatchProgress()
    progress.increment_processed()
    assert progress.current.processed == 1, "mid-epoch resume reads current.processed"
    assert progress.is_last_batch is False, "last.ckpt after validation reads is_last_batch"


def test_model_parallel_strategy_still_keeps_the_distributed_checkpoint_choice():
    for choice in (True, False):
        strategy = ModelParallelStrategy(save_distributed_checkpoint=choice)
        assert compat.saves_distributed_checkpoint(strategy) is choice


def test_model_parallel_strategy_still_sets_up_as_set_up_with_mesh_does():
    """compat.set_up_with_mesh repeats ModelParallelStrategy.setup_environment with a mesh
    of its own: the private names it sets and calls must still be the ones Lightning uses."""
    source = inspect.getsource(ModelParallelStrategy.setup_environment)
    for name in (
        "self._setup_distributed()",
        "self._device_mesh =",
        "._device_mesh = self._device_mesh",
    ):
        assert name in source, f"ModelParallelStrategy.setup_environment no longer has {name}"


def test_device_mesh_can_still_be_flattened():
    assert callable(getattr(DeviceMesh, "_flatten", None)), (
        "DeviceMesh._flatten is gone: model_sharded gradient norms would take two reductions"
    )


def test_parallelize_module_still_calls_the_styles_private_apply():
    from torch.distributed.tensor.parallel import api

    assert "._apply(" in inspect.getsource(api.parallelize_module), (
        "parallelize_module no longer calls ParallelStyle._apply: see "
        "scaletrain.compat.CustomParallelStyle"
    )


def test_transformers_models_still_carry_their_parallel_plans():
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=16, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1,
    )  # fmt: skip
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    tensor_parallel, pipeline = compat.hf_parallel_plans(model)
    assert tensor_parallel["model.layers.*.self_attn.q_proj"] == "colwise", (
        "a transformers model's _tp_plan has moved: model=hf_causal_lm would have no "
        "tensor-parallel plan; see compat.hf_parallel_plans"
    )
    assert {"model.embed_tokens", "model.layers", "model.norm", "lm_head"} <= set(pipeline)


def test_lightnings_wandb_logger_still_keeps_its_init_arguments():
    pytest.importorskip("wandb")  # the optional extra, installed by scripts/setup.sh
    from lightning.pytorch.loggers import WandbLogger

    logger = WandbLogger(offline=True)
    assert logger._wandb_init["anonymous"] is None
    compat.drop_unset_wandb_anonymous(logger)
    assert "anonymous" not in logger._wandb_init


def test_omegaconf_nodes_are_still_read_unresolved():
    cfg = OmegaConf.create({"a": "${missing}", "b": None})
    assert compat.child_node(cfg, "a")._value() == "${missing}"
    assert compat.is_none_node(compat.child_node(cfg, "b"))


def private_uses(path: Path) -> list[str]:
    """Every ``x._name`` and ``from y import _name`` in ``path`` that reaches into a
    private name defined outside scaletrain: names scaletrain defines itself (``self._x``,
    ``def _x``, ``_x = ...``) are its own."""
    tree = ast.parse(path.read_text())
    own = {
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)
    }
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        for target in targets:
            if isinstance(target, ast.Attribute):
                own.add(target.attr)
            elif isinstance(target, ast.Name):
                own.add(target.id)
    found = []
    for node in ast.walk(tree):
        # ``_target_`` and its kin are Hydra's public config keys, ``__x__`` Python's own
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            name = f"{ast.unparse(node.value)}.{node.attr}"
            public = node.attr.endswith("_") or name in DOCUMENTED
            if not public and node.attr not in own:
                found.append(f"{path.name}:{node.lineno}: {name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            private_module = any(part.startswith("_") for part in node.module.split("."))
            names = [alias.name for alias in node.names if alias.name.startswith("_")]
            if (private_module and not node.module.startswith("scaletrain")) or names:
                found.append(f"{path.name}:{node.lineno}: from {node.module} import {names}")
    return found


def test_only_compat_touches_private_names_of_other_packages():
    found = [
        use
        for path in sorted([*SOURCE.rglob("*.py"), *PLUGIN.rglob("*.py")])
        if path.name != "compat.py"
        for use in private_uses(path)
    ]
    assert found == [], "private APIs belong in scaletrain/compat.py:\n" + "\n".join(found)


def test_the_private_name_check_finds_a_private_use(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "import torch\nfrom lightning.fabric.utilities.types import _PATH\n"
        "class S:\n    def f(self):\n        self._mine = 1\n        return self._mine\n"
        "norms = torch._foreach_norm([])\n"
    )
    assert private_uses(source) == [
        "sample.py:2: from lightning.fabric.utilities.types import ['_PATH']",
        "sample.py:7: torch._foreach_norm",
    ]
    assert torch.__version__  # the sample is parsed, never run


def test_model_checkpoint_still_writes_through_its_save_hook():
    from lightning.pytorch.callbacks import ModelCheckpoint

    source = inspect.getsource(ModelCheckpoint._save_checkpoint)
    for step in (
        "trainer.save_checkpoint(filepath, self.save_weights_only)",
        "self._last_global_step_saved = trainer.global_step",
        "self._last_checkpoint_saved = filepath",
        "logger.after_save_checkpoint(proxy(self))",
    ):
        assert step in source, (
            f"ModelCheckpoint._save_checkpoint no longer does {step!r}: the best checkpoint "
            "written in the background misses it; see scaletrain.compat.save_model_checkpoint"
        )


def test_torchs_runtime_schedules_still_keep_their_lowered_actions():
    """compat.forward_only cuts a V-shaped schedule's lowered actions to the forwards."""
    import inspect

    from torch.distributed.pipelining import schedules

    source = inspect.getsource(schedules._PipelineScheduleRuntime)
    assert "self.pipeline_order_with_comms[self.rank]" in source
    names = {member.name for member in schedules._ComputationType}
    assert {"FORWARD", "SEND_F", "RECV_F"} <= names


def test_torchmetrics_still_keeps_a_batchs_value_where_lightning_reads_it():
    """compat.metric_step_value: the value Lightning logs for a metric on a step."""
    import inspect

    import torch
    from lightning.pytorch.trainer.connectors.logger_connector import result
    from torchmetrics import MeanMetric

    from scaletrain import compat

    metric = MeanMetric()
    metric(torch.tensor([1.0, 3.0]))
    assert compat.metric_step_value(metric).item() == 2.0
    assert f"value.{compat.METRIC_STEP_VALUE}" in inspect.getsource(result)
