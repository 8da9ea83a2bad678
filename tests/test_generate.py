"""Sampling from a language model: ``python -m scaletrain.generate`` and ``sample``, and
bits per byte."""

import math
import sys

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra

from scaletrain import generate
from scaletrain.checkpoint.consolidate import consolidate
from scaletrain.models.sampling import sample
from scaletrain.nets.gpt import GPT
from tests.helpers import run_cli, run_in_process

SENTENCE = "the quick brown fox jumps over the lazy dogs. "  # 46 bytes
CONTEXT = 32  # windows of 33 bytes: 33 and 46 have no common divisor, so the training
# windows start at every position of the sentence, as the cropped windows of a sample do
GPT_TEXT = [
    "experiment=gpt_text",
    f"data.context_length={CONTEXT}",
    "data.batch_size=16",
    "model.net.dim=32",
    "model.net.num_layers=1",
    "model.net.num_heads=2",
    "trainer.max_epochs=-1",
    "trainer.limit_train_batches=null",
    "trainer.val_check_interval=null",
    "trainer.limit_val_batches=null",
    "trainer.limit_test_batches=null",
]


@pytest.fixture(scope="module")
def sentence_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "sentence.txt"
    path.write_text(SENTENCE * 300)
    return path


@pytest.fixture(scope="module")
def overfit(sentence_file):
    """A tiny GPT trained by ``scaletrain.train`` on one sentence, repeated, until it knows
    it by heart: its run directory and final metrics."""
    run_dir = sentence_file.parent / "overfit"
    metrics = run_in_process(
        run_dir,
        *GPT_TEXT,
        f"data.paths=[{sentence_file}]",
        "model.optimizer.lr=1e-2",
        "trainer.max_steps=150",
        "trainer.check_val_every_n_epoch=5",
    )
    return run_dir, metrics


@pytest.fixture(scope="module")
def barely_trained(sentence_file):
    """The same GPT after one step: its next-token distributions are still broad."""
    run_dir = sentence_file.parent / "barely"
    run_in_process(run_dir, *GPT_TEXT, f"data.paths=[{sentence_file}]", "trainer.max_steps=1")
    return run_dir


def generate_here(capsys, *args: str) -> tuple[int, str, str]:
    """``python -m scaletrain.generate args...`` in this process: exit code, stdout, stderr."""
    GlobalHydra.instance().clear()
    argv = sys.argv
    sys.argv = ["scaletrain.generate", *args]
    capsys.readouterr()
    try:
        generate.run()
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    finally:
        sys.argv = argv
    out = capsys.readouterr()
    return code, out.out, out.err


def generated(capsys, *args: str) -> str:
    code, out, err = generate_here(capsys, *args)
    assert code == 0, err
    return out.removesuffix("\n")


def test_greedy_generation_from_an_overfit_gpt_reproduces_its_sentence(overfit, capsys):
    run_dir, metrics = overfit
    assert metrics["test/loss"] < 0.1
    # 120 new tokens: far past the context, so the window is cropped for most of them
    text = generated(
        capsys, f"ckpt_path={run_dir}", 'prompt="the quick"', "temperature=0", "max_new_tokens=120"
    )
    assert text == (SENTENCE * 4)[: len("the quick") + 120]


def test_bits_per_byte_of_byte_data_is_the_loss_in_bits(overfit):
    _, metrics = overfit
    for metric in ("val/bpb", "test/bpb", "val/bpb_best"):
        loss = metrics[metric.replace("bpb", "loss")]
        assert metrics[metric] == pytest.approx(loss / math.log(2), rel=1e-6)


def test_the_same_seed_gives_the_same_text_another_seed_other_text(barely_trained, capsys):
    common = [f"ckpt_path={barely_trained}", 'prompt="the"', "temperature=1", "max_new_tokens=40"]
    first, again, other = (generated(capsys, *common, f"seed={seed}") for seed in (0, 0, 1))
    assert first == again
    assert other != first
    assert first.startswith("the") and len(first) > len("the")


def test_sample_crops_to_the_context_and_top_k_1_is_greedy():
    torch.manual_seed(0)
    net = GPT(vocab_size=16, context_length=4, num_layers=1, num_heads=2, dim=8)
    prompt = torch.tensor([1, 2, 3, 4, 5, 6])  # longer than the context: the oldest are dropped
    greedy = sample(net, prompt, 10, temperature=0)
    top_1 = sample(net, prompt, 10, temperature=1.5, top_k=1, generator=torch.Generator())
    assert greedy.shape == (16,) and torch.equal(greedy[:6], prompt)
    assert torch.equal(top_1, greedy)
    seeded = [
        sample(net, prompt, 20, generator=torch.Generator().manual_seed(s)) for s in (0, 0, 1)
    ]
    assert torch.equal(seeded[0], seeded[1]) and not torch.equal(seeded[0], seeded[2])
    assert net.training  # left as it was found


def test_bad_settings_are_one_line_errors(overfit, capsys):
    run_dir, _ = overfit
    code, out, err = generate_here(
        capsys,
        f"ckpt_path={run_dir}",
        "max_new_tokens=0",
        "temperature=-0.5",
        "top_k=0",
    )
    assert code == 2 and out == ""
    assert err.splitlines() == [
        "error: max_new_tokens=0: must be a positive integer",
        "error: temperature=-0.5: must be 0 (greedy) or a positive number",
        "error: top_k=0: must be a positive integer, or null for no top-k",
    ]
    code, _, err = generate_here(capsys, f"ckpt_path={run_dir}", "prompt=")
    assert code == 2
    assert err == "error: prompt='': encodes to no tokens; give at least one character\n"
    code, _, err = generate_here(capsys, f"ckpt_path={run_dir}/nothing.ckpt")
    assert code == 2
    assert err == (
        f"error: ckpt_path={run_dir}/nothing.ckpt: no such file or directory; give a "
        "checkpoint written by train, or its run directory\n"
    )
    code, _, err = generate_here(capsys)
    assert code == 2 and err.startswith("error: ckpt_path: required;")


def test_a_classifier_checkpoint_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "digits"
    run_in_process(run_dir, "trainer.max_steps=2", "trainer.limit_val_batches=1", "test=false")
    code, out, err = generate_here(capsys, f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    assert code == 2 and out == ""
    assert err == (
        f"error: ckpt_path={run_dir}/checkpoints/last.ckpt: a checkpoint of Classifier, not of "
        "a language model; generate samples from language models (model=gpt)\n"
    )


@pytest.mark.slow
def test_a_sharded_checkpoint_generates_what_its_consolidated_file_generates(
    sentence_file, tmp_path, capsys
):
    """Also: bits per byte summed over 2 ranks (the last batch padded) equals one process's."""
    run = run_cli(
        "train",
        tmp_path / "fsdp",
        *GPT_TEXT,
        f"data.paths=[{sentence_file}]",
        "data.batch_size=6",  # 21 test windows: 2 ranks x 3, the last global batch padded
        "trainer.max_steps=4",
        "strategy=fsdp",
        "trainer.devices=2",
    )
    assert run.returncode == 0, run.output
    last = run.run_dir / "checkpoints" / "last.ckpt"
    assert last.is_dir()
    full = consolidate(last, last.with_name("last-full.ckpt"))
    common = ['prompt="the"', "temperature=1", "top_k=5", "max_new_tokens=30", "seed=3"]
    from_shards = generated(capsys, f"ckpt_path={last}", *common)
    assert generated(capsys, f"ckpt_path={run.run_dir}", *common) == from_shards
    assert generated(capsys, f"ckpt_path={full}", *common) == from_shards
    assert len(from_shards) > len("the")

    sharded = run.metrics["metrics"]  # tested on the final weights: no validation ran
    single = run_in_process(tmp_path / "eval", f"ckpt_path={full}", task="eval")
    assert sharded["test/bpb"] == pytest.approx(sharded["test/loss"] / math.log(2), rel=1e-6)
    assert single["test/bpb"] == pytest.approx(sharded["test/bpb"], rel=1e-5)
