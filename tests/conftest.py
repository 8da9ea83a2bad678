"""Fixtures: the real command-line entry points, run in a fresh directory."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI_ENV, REPO, Run, run_cli, run_here

TINY_LLAMA_MAKER = REPO / "scripts" / "make_tiny_llama.py"


@pytest.fixture
def train_cli(tmp_path):
    """Run ``scaletrain.train`` in a fresh directory under tmp_path; returns the Run."""

    def run(*overrides: str, name: str = "run", **kwargs) -> Run:
        return run_cli("train", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides, **kwargs)

    return run


@pytest.fixture
def eval_cli(tmp_path):
    def run(*overrides: str, name: str = "eval", **kwargs) -> Run:
        return run_cli("eval", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides, **kwargs)

    return run


@pytest.fixture
def train_here(tmp_path):
    """Like ``train_cli``, in this process: for tests of what a run does, not of its
    command line."""

    def run(*overrides: str, name: str = "run") -> Run:
        return run_here("train", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides)

    return run


@pytest.fixture
def eval_here(tmp_path):
    def run(*overrides: str, name: str = "eval") -> Run:
        return run_here("eval", tmp_path / name, f"paths.root_dir={tmp_path}", *overrides)

    return run


def make_tiny_llama(out: Path, *options: str) -> Path:
    """A Llama checkpoint directory with its tokenizer, by the README's script."""
    done = subprocess.run(
        [sys.executable, str(TINY_LLAMA_MAKER), str(out), *options],
        capture_output=True,
        text=True,
        env=CLI_ENV,
    )
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="session")
def hf_data_dir(tmp_path_factory) -> Path:
    """``tiny-llama/`` (a small Llama checkpoint in shards, with its tokenizer),
    ``docs.jsonl`` and ``docs-tiny-llama/`` (that corpus prepared with the checkpoint's
    tokenizer): the files ``experiment=hf_finetune`` reads, for ``paths.data_dir``."""
    pytest.importorskip("transformers")
    from scaletrain.data.preparation import PrepareSettings, prepare

    data = tmp_path_factory.mktemp("hf") / "data"
    small = ["--vocab-size", "300", "--hidden-size", "64", "--layers", "2"]
    make_tiny_llama(data / "tiny-llama", "--corpus", str(data / "docs.jsonl"), *small)
    settings = PrepareSettings(tokenizer=str(data / "tiny-llama"))
    prepare([data / "docs.jsonl"], data / "docs-tiny-llama", settings)
    return data


# Files whose tests take minutes run first: the two test processes then end together,
# instead of one waiting out the longest file alone at the end (pytest-xdist hands out
# whole files in collection order).
LONGEST_FIRST = (
    "test_benchmark.py",
    "test_slurm.py",
    "test_pipeline.py",
    "test_sharded_init.py",
    "test_kill_resume.py",
    "test_memory_limit.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))
