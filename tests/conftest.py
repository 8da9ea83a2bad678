"""Fixtures: the real command-line entry points, run in a fresh directory."""

import pytest

from tests.helpers import Run, run_cli, run_here


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
