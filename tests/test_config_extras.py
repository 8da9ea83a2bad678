"""What Lightning-Hydra users expect of a template: the composed config printed as a
tree, a machine's own settings in a git-ignored conf/local/, and checks before commits."""

import shutil
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from scaletrain.config import CONFIG_DIR
from tests.helpers import REPO


def test_print_config_prints_the_composed_config_as_a_tree(train_here, capsys):
    run = train_here("print_config=true", "trainer.max_epochs=1", "test=false")
    assert run.returncode == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "config"
    assert "├── data:" in lines and "├── model:" in lines
    assert out.index("├── data:") < out.index("├── model:") < out.index("├── trainer:")
    assert "│     seed: 42" in lines  # references resolved


def test_print_config_is_off_by_default(train_here, capsys):
    assert train_here("trainer.max_epochs=1", "test=false").returncode == 0
    assert "├── data:" not in capsys.readouterr().out


def test_a_local_config_is_loaded_where_it_exists(tmp_path):
    conf = tmp_path / "conf"
    shutil.copytree(CONFIG_DIR, conf)
    local = conf / "local"
    assert not local.exists()  # a clone has none: it is this machine's, not committed
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert compose("train").trainer.accelerator == "auto"
    local.mkdir()
    (local / "default.yaml").write_text("# @package _global_\ntrainer:\n  accelerator: cpu\n")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert compose("train").trainer.accelerator == "cpu"
        # an experiment still overrides it
        assert compose("train", overrides=["experiment=gpt_text"]).data.batch_size == 32
    ignored = subprocess.run(["git", "check-ignore", "conf/local/default.yaml"], cwd=REPO)
    assert ignored.returncode == 0


def test_the_pre_commit_config_is_valid():
    pre_commit = Path(sys.executable).parent / "pre-commit"
    checked = subprocess.run(
        [str(pre_commit), "validate-config", ".pre-commit-config.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
