"""eval takes the training run's model and data, and its own overrides of them on top,
read with Hydra's parser: a group option, a key, an added key, a deleted key."""

from omegaconf import DictConfig

from scaletrain.eval import adopt_run_config
from tests.helpers import compose_config, compose_train

RUN = ["data.batch_size=64", "model.net.hidden_dims=[16]", "trainer.limit_test_batches=3"]


def adopted(*overrides: str) -> DictConfig:
    cfg = compose_config("eval", "ckpt_path=x.ckpt", *overrides)
    adopt_run_config(cfg, compose_train(*RUN), list(overrides))
    return cfg


def test_without_overrides_the_runs_settings_are_taken():
    cfg = adopted()
    assert cfg.data.batch_size == 64
    assert list(cfg.model.net.hidden_dims) == [16]
    assert cfg.trainer.limit_test_batches == 3


def test_a_group_option_replaces_the_runs_group_with_the_options_config():
    cfg = adopted("data=synthetic")
    assert isinstance(cfg.data, DictConfig)
    assert cfg.data._target_.endswith("SyntheticDataModule")
    assert list(cfg.model.net.hidden_dims) == [16]  # the model is still the run's


def test_a_key_an_added_key_and_a_deleted_key_apply_on_top_of_the_runs_settings():
    cfg = adopted("data.batch_size=16", "+data.extra=1", "~data.num_workers")
    assert cfg.data.batch_size == 16
    assert cfg.data.extra == 1
    assert "num_workers" not in cfg.data
    assert list(cfg.model.net.hidden_dims) == [16]
