"""The README's "Your own model and data", followed literally: its files written as it shows
them, its commands run as written, from a folder of the user's own."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import CLI_ENV, REPO

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

SECTION = re.compile(r"^## Your own model and data\n(.*?)^## ", re.S | re.M)
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def section_blocks() -> list[tuple[str, str]]:
    """The section's code blocks: (language, text)."""
    (section,) = SECTION.findall((REPO / "README.md").read_text())
    return BLOCK.findall(section)


def test_the_readme_own_model_and_data_train_under_every_strategy(tmp_path):
    blocks = section_blocks()
    files = [text for language, text in blocks if language in ("python", "yaml")]
    for text in files:
        # each file's first comment names it (after a yaml file's package header)
        name = next(line for line in text.splitlines() if not line.startswith("# @"))
        path = tmp_path / name.removeprefix("# ")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert {p.name for p in tmp_path.rglob("*.*")} == {
        "mynets.py",
        "mydata.py",
        "residual_mlp.yaml",
        "my_digits.yaml",
        "mymodules.py",  # a LightningModule of one's own
    }
    commands = "".join(text for language, text in blocks if language == "bash" and "myconf" in text)
    env = {
        **CLI_ENV,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(REPO),  # for the suite's own imports only; the commands set theirs
    }
    script = "set -e\n" + "\n".join(f"{line}\n" for line in commands.splitlines())
    run = subprocess.run(
        ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    results = sorted((tmp_path / "outputs" / "runs").glob("*/metrics.json"))
    assert len(results) == 6
    for result in results:
        assert json.loads(result.read_text())["metrics"]["test/acc"] > 0.9, result
