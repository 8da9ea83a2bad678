"""The commands of the README's Quick start and Configuration sections, run as a newcomer
types them, in order, from a working directory of their own (``python`` and
``tensorboard`` from the project's environment). Training commands get a step cap
appended, so that the whole walk takes a minute or two; everything else is as written.
``<run>`` is the directory of the run the command is about (the last MLP run, or the
GPT run for ``generate``)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers import CLI_ENV, REPO, free_port
from tests.test_mnist import write_mnist

pytestmark = pytest.mark.slow  # starts training runs as subprocesses

SECTION = r"^##+ {title}\n(.*?)^##"  # up to the next section or subsection
BASH = re.compile(r"^```bash\n(.*?)^```", re.S | re.M)
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# keeps a training command short: the defaults train for seconds to minutes
CAP = ["trainer.max_steps=20", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
STDLIB = Path(os.__file__).parent


def section(title: str) -> str:
    (text,) = re.findall(SECTION.format(title=title), (REPO / "README.md").read_text(), re.S | re.M)
    return text


def commands(title: str) -> list[str]:
    """The command lines of a README section's bash blocks, comments removed."""
    lines = [
        line.split("  #")[0].strip()
        for block in BASH.findall(section(title))
        for line in block.splitlines()
    ]
    return [line for line in lines if line and not line.startswith("#")]


def kind_of(line: str) -> str:
    """Which of the newcomer's runs a command makes or is about: the GPT's (generate),
    the fine-tuned one's (export) or the MLP's."""
    if "experiment=gpt" in line:
        return "gpt"
    return "hf" if "experiment=hf" in line or "scaletrain.export" in line else "mlp"


class Newcomer:
    """A shell in a directory of one's own, with the project's environment on PATH."""

    def __init__(self, home: Path) -> None:
        self.home = home
        bin_dir = str(Path(sys.executable).parent)
        self.env = {**CLI_ENV, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
        self.runs: dict[str, Path] = {}

    def run(self, line: str) -> subprocess.CompletedProcess:
        if line.startswith("python -m scaletrain.train") and "--cfg" not in line:
            line = f"{line} {' '.join(CAP)}"
        kind = kind_of(line.replace("scaletrain.generate", "experiment=gpt"))
        if "<run>" in line:
            line = line.replace("outputs/runs/<run>", str(self.runs[kind].relative_to(self.home)))
        before = set(self.run_dirs())
        done = subprocess.run(
            ["bash", "-c", line],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
        for run_dir in set(self.run_dirs()) - before:
            self.runs[kind_of(line)] = run_dir
        return done

    def run_dirs(self) -> list[Path]:
        return (
            sorted((self.home / "outputs" / "runs").glob("*"))
            if (self.home / "outputs").is_dir()
            else []
        )


def test_the_quick_start_commands_run_as_written(tmp_path):
    user = Newcomer(tmp_path)
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    write_mnist(tmp_path / "data" / "mnist", gz=True)  # the files experiment=seed_mnist reads
    (tmp_path / "my_texts").mkdir()
    for source in sorted(STDLIB.glob("[a-c]*.py"))[:20]:  # "your text files"
        shutil.copy(source, tmp_path / "my_texts")
    lines = commands("Quick start")
    assert lines[:2] == [
        "bash scripts/setup.sh && .venv/bin/python -m scaletrain.train",
        "bash scripts/setup.sh && .venv/bin/python -m pytest",
    ]  # the setup, which CI runs (.ci/run): not again here
    ran = []
    for line in lines[2:]:
        if line.startswith("source "):
            continue
        if line.startswith("tensorboard "):
            served = serve_tensorboard(user, line)
            assert any(name.startswith("mlp-digits") for name in served), served
        else:
            user.run(line)
        ran.append(line.split()[2] if line.startswith("python") else line.split()[0])
    assert ran == [
        *["scaletrain.train"] * 4,
        "scaletrain.prepare",
        *["scaletrain.train"] * 2,
        "scaletrain.eval",
        "scaletrain.generate",
        "tensorboard",
    ]


def serve_tensorboard(user: Newcomer, line: str) -> list[str]:
    """Start ``line`` (a TensorBoard command) on a free port; the runs it lists."""
    port = free_port()
    server = subprocess.Popen(
        ["bash", "-c", f"exec {line} --port {port} --host 127.0.0.1"],
        cwd=user.home,
        env=user.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/data/runs", timeout=5
                ) as answer:
                    return json.loads(answer.read())
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_the_configuration_examples_run_as_written(tmp_path):
    user = Newcomer(tmp_path)
    lines = commands("Configuration")
    assert len(lines) >= 9
    for line in lines:
        done = user.run(line)
        if "--cfg job" in line:
            assert "model:" in done.stdout and "strategy:" in done.stdout
        if "print_config=true" in line:
            assert done.stdout.index("model") < done.stdout.index("run directory")


def test_the_fine_tuning_commands_run_as_written(tmp_path):
    """From making the stand-in checkpoint to generating with transformers from the
    export (the section's Python block, run as a script)."""
    user = Newcomer(tmp_path)
    (tmp_path / "scripts").symlink_to(REPO / "scripts")  # the commands run from a checkout
    lines = commands("Fine-tune a Hugging Face model")
    assert [line.split()[1 if line.startswith("python scripts") else 2] for line in lines] == [
        "scripts/make_tiny_llama.py",
        "scaletrain.prepare",
        "scaletrain.train",
        "scaletrain.export",
    ]
    for line in lines:
        user.run(line)
    assert (tmp_path / "exported" / "tiny-llama" / "config.json").is_file()
    (program,) = PYTHON.findall(section("Fine-tune a Hugging Face model"))
    (tmp_path / "serve.py").write_text(program)
    done = user.run("python serve.py")
    assert done.stdout.startswith("Return the"), done.stdout
