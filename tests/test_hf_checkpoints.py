"""Hugging Face checkpoints in and out: a local checkpoint directory (as ``save_pretrained``
writes it, in shards) is the initial weights under every layout, each rank reading only
its part; ``scaletrain.export`` writes what transformers loads offline, with the same
logits as scaletrain's, from single, fsdp and pipeline runs alike. The checkpoint is made
by ``scripts/make_tiny_llama.py``, as the README's fine-tuning recipe makes it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from scaletrain.benchmark import cli_run, per_rank
from scaletrain.checkpoint.consolidate import consolidate, is_sharded_checkpoint
from scaletrain.checkpoint.export import write_directory
from scaletrain.config.build import build_model
from scaletrain.config.preflight import validate
from scaletrain.data.codec import BPECodec
from scaletrain.data.preparation import PrepareError, PrepareSettings, prepare
from scaletrain.data.shards import read_manifest
from scaletrain.export import ExportError, export
from scaletrain.models.language_model import LanguageModel
from scaletrain.nets.hf import CausalLM
from tests.conftest import make_tiny_llama
from tests.helpers import (
    CLI_ENV,
    PARITY_COMMON,
    PARITY_MODELS,
    PARITY_STRATEGIES,
    TOLERANCE,
    compose_train,
    run_cli,
)
from tests.test_user_models import PIPELINE, saved_initial_weights

transformers = pytest.importorskip("transformers")

LAYOUTS = {
    "single": [],
    "ddp": PARITY_STRATEGIES["ddp"],
    "fsdp": PARITY_STRATEGIES["fsdp"],
    "model_sharded": PARITY_STRATEGIES["model_sharded"],
    "pipeline": PIPELINE,
}


@pytest.fixture(scope="module")
def data_dir(hf_data_dir) -> Path:
    return hf_data_dir


def finetune(data_dir: Path) -> list[str]:
    return [
        "experiment=hf_finetune",
        f"paths.data_dir={data_dir}",
        "data.context_length=32",
        "data.batch_size=8",
    ]


def saved(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint directory's safetensors files."""
    tensors: dict[str, torch.Tensor] = {}
    for path in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def tokens(vocab_size: int) -> torch.Tensor:
    return torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(0))


def transformers_logits(directory: Path, inputs: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return model(input_ids=inputs).logits


# -- in: the checkpoint is the initial weights -----------------------------------------------


def test_the_checkpoint_is_in_shards_with_its_tokenizer(data_dir):
    checkpoint = data_dir / "tiny-llama"
    assert len(list(checkpoint.glob("*.safetensors"))) >= 2
    assert (checkpoint / "model.safetensors.index.json").is_file()
    manifest = read_manifest(data_dir / "docs-tiny-llama")
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    assert manifest.vocab_size == len(tokenizer) == 300
    assert manifest.raw["end_of_document"] == tokenizer.eos_token_id


def test_the_initial_forward_equals_transformers_own(data_dir):
    module = build_model(compose_train(*finetune(data_dir)))
    inputs = tokens(300)
    with torch.no_grad():
        ours = module(inputs)
    difference = (ours - transformers_logits(data_dir / "tiny-llama", inputs)).abs().max()
    assert difference <= 1e-5
    # the checkpoint's weights, not drawn ones: another seed starts the same
    again = build_model(compose_train(*finetune(data_dir), "seed=7"))
    for (name, param), (_, other) in zip(
        module.net.named_parameters(), again.net.named_parameters(), strict=True
    ):
        assert torch.equal(param, other), name


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_starts_from_the_checkpoint(tmp_path, data_dir, layout):
    weights = saved_initial_weights(tmp_path, layout, *finetune(data_dir), *LAYOUTS[layout])
    expected = saved(data_dir / "tiny-llama")
    assert {name.removeprefix("hf.") for name in weights} == set(expected)
    for name, value in weights.items():
        assert torch.equal(value, expected[name.removeprefix("hf.")]), name
    net = CausalLM(pretrained=str(data_dir / "tiny-llama"))
    net.load_state_dict(weights)
    inputs = tokens(300)
    with torch.no_grad():
        ours = net(inputs)
    assert (ours - transformers_logits(data_dir / "tiny-llama", inputs)).abs().max() <= 1e-5


@pytest.mark.slow
def test_under_fsdp_no_rank_holds_the_whole_checkpoint_while_loading(tmp_path):
    """Setup peak per rank (as the benchmark measures it: resident memory above the
    baseline after imports, until the first step) against the weights' bytes."""
    data = tmp_path / "data"
    make_tiny_llama(data / "tiny-llama", "--hidden-size", "1024", "--layers", "8")
    corpus = tmp_path / "docs.txt"
    corpus.write_text("Fine-tuning text. " * 4000)
    prepare([corpus], data / "docs-tiny-llama", PrepareSettings(tokenizer=str(data / "tiny-llama")))
    perf = cli_run(
        [*finetune(data), *PARITY_STRATEGIES["fsdp"], "trainer.max_steps=1"], tmp_path / "run"
    )
    weight_bytes = perf["perf/params_full_bytes"][0]
    assert weight_bytes > 300 * 2**20  # fixed costs of a process are a small share of this
    for peak in per_rank(perf, "setup_peak_memory_bytes"):
        assert peak <= 0.6 * weight_bytes, f"{peak / weight_bytes:.2f}x the weights"


# -- bad input: one line before anything starts -----------------------------------------------


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model.net.pretrained=meta-llama/Llama-3.2-1B",
            "model.net.pretrained=meta-llama/Llama-3.2-1B: no such directory; scaletrain "
            "never downloads",
        ),
        ("model.net.pretrained={data}", "no config.json in it"),
        (
            "model.net.config={{hidden_size:32}}",
            "model.net.config.hidden_size=32: the checkpoint in model.net.pretrained=",
        ),
    ],
)
def test_a_checkpoint_that_cannot_be_read_is_one_line(data_dir, override, expected):
    problems = validate(compose_train(*finetune(data_dir), override.format(data=data_dir)))
    assert len(problems) == 1 and expected in problems[0], problems
    assert "\n" not in problems[0]


def test_data_with_tokens_beyond_the_checkpoints_vocabulary_is_one_line(data_dir, tmp_path):
    other = tmp_path / "bytes"
    prepare([data_dir / "docs.jsonl"], other, PrepareSettings(tokenizer="bpe", vocab_size=512))
    (problem,) = validate(compose_train(*finetune(data_dir), f"data.dir={other}"))
    assert problem.startswith(f"model.net.pretrained={data_dir}/tiny-llama: its vocabulary has 300")
    assert f"--tokenizer {data_dir}/tiny-llama" in problem


def test_a_hub_id_on_the_command_line_exits_2(tmp_path, data_dir):
    run = run_cli("train", tmp_path, *finetune(data_dir), "model.net.pretrained=org/model")
    assert run.returncode == 2
    assert (
        run.stderr.strip()
        .splitlines()[-1]
        .startswith("error: model.net.pretrained=org/model: no such directory")
    )


def test_prepare_with_a_directory_that_has_no_tokenizer_is_one_line(tmp_path, data_dir):
    with pytest.raises(PrepareError, match=r"--tokenizer .*: valid: bpe, bytes, or a directory"):
        prepare(
            [data_dir / "docs.jsonl"], tmp_path / "out", PrepareSettings(tokenizer=str(tmp_path))
        )


# -- out: export, then transformers loads it --------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory, data_dir) -> dict[str, Path]:
    """The same fine-tuning steps as a single-process, an fsdp 2 and a pipeline 2 run,
    each exported (from its run directory)."""
    root = tmp_path_factory.mktemp("exports")
    exported = {}
    for layout in ("single", "fsdp", "pipeline"):
        run = run_cli(
            "train",
            root / layout,
            *finetune(data_dir),
            *PARITY_COMMON,
            *LAYOUTS[layout],
        )
        assert run.returncode == 0, run.output
        exported[layout] = root / f"export-{layout}"
        export(run.run_dir, exported[layout])
        exported[f"{layout}-run"] = run.run_dir
    return exported


def checkpoint_file(run_dir: Path) -> Path:
    """The run's last checkpoint as one file."""
    last = run_dir / "checkpoints" / "last.ckpt"
    return consolidate(last, run_dir / "full.ckpt") if is_sharded_checkpoint(last) else last


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["single", "fsdp", "pipeline"])
def test_an_export_loads_in_transformers_with_scaletrains_logits(exports, data_dir, layout):
    module = LanguageModel.load_from_checkpoint(
        checkpoint_file(exports[f"{layout}-run"]), map_location="cpu"
    ).eval()
    inputs = tokens(300)
    with torch.no_grad():
        ours = module(inputs)
    assert (ours - transformers_logits(exports[layout], inputs)).abs().max() <= 1e-5
    # the run's tokenizer, as the data was encoded
    tokenizer = transformers.AutoTokenizer.from_pretrained(exports[layout])
    codec = BPECodec(read_manifest(data_dir / "docs-tiny-llama").tokenizer_path)
    text = "Return the value of the named attribute."
    assert tokenizer(text)["input_ids"] == codec.encode(text)
    assert tokenizer.decode(codec.encode(text)) == text
    assert tokenizer.eos_token == "<|endoftext|>"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["fsdp", "pipeline"])
def test_an_export_of_a_sharded_run_equals_the_single_process_one(exports, layout):
    expected, found = saved(exports["single"]), saved(exports[layout])
    assert found.keys() == expected.keys()
    for name, value in expected.items():
        assert (found[name] - value).abs().max() <= TOLERANCE, name
    config = json.loads((exports[layout] / "config.json").read_text())
    assert config == json.loads((exports["single"] / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]


# -- out: what cannot be exported, and what a failed export leaves -----------------------------


@pytest.mark.slow
def test_an_export_over_an_existing_directory_needs_force(exports, tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "mine.txt").write_text("kept")
    with pytest.raises(ExportError, match=r"--out .*: exists; add --force to replace it"):
        export(exports["single-run"], target)
    assert (target / "mine.txt").read_text() == "kept"
    export(exports["single-run"], target, force=True)
    assert not (target / "mine.txt").exists() and (target / "config.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no scratch left beside it
    (tmp_path / "made").mkdir()  # the export's permissions are those of any directory made
    assert target.stat().st_mode & 0o777 == (tmp_path / "made").stat().st_mode & 0o777


def test_a_failed_export_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "out"

    def write_half(directory: Path) -> None:
        (directory / "config.json").write_text("{}")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        write_directory(target, write_half, force=False)
    assert list(tmp_path.iterdir()) == []
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(OSError):
        write_directory(target, write_half, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (target / "config.json").read_text() == "old"


@pytest.mark.parametrize(
    "source, expected",
    [
        ("nowhere", "nowhere: no such file or directory"),
        ("empty-run", "empty-run: the run has saved no checkpoints/last.ckpt yet"),
        ("file.txt", "file.txt: not a checkpoint"),
    ],
)
def test_an_export_of_no_checkpoint_is_one_line(tmp_path, source, expected):
    (tmp_path / "empty-run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("text")
    with pytest.raises(ExportError) as raised:
        export(tmp_path / source, tmp_path / "out")
    assert str(raised.value).endswith(expected) or expected in str(raised.value)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_the_built_in_gpt_is_not_exported_and_the_command_says_why(tmp_path):
    run = run_cli(
        "train",
        tmp_path / "gpt",
        *PARITY_MODELS["gpt"],
        "trainer.max_steps=1",
        "trainer.limit_val_batches=0",
        "test=false",
    )
    assert run.returncode == 0, run.output
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain.export", str(run.run_dir), "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=CLI_ENV,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: the run's net, scaletrain.nets.gpt.GPT, is not a Hugging Face")
    assert "train model=hf_causal_lm" in line
    assert not (tmp_path / "x").exists()


def test_a_shard_size_that_is_no_size_is_one_line(tmp_path):
    with pytest.raises(ExportError, match=r"--max-shard-size lots: give a size such as 5GB"):
        export(tmp_path, tmp_path / "out", max_shard_size="lots")
    done = subprocess.run(
        [sys.executable, "-m", "scaletrain.export", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        env=CLI_ENV,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: the following arguments are required: source; "
        "see python -m scaletrain.export --help"
    )


def test_a_checkpoint_saved_in_bf16_trains_in_fp32(tmp_path):
    """Published checkpoints are mostly saved in bf16; the net keeps fp32 weights (mixed
    precision is the strategy's), holding the checkpoint's values."""
    config = transformers.LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
    )  # fmt: skip
    transformers.AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(
        tmp_path / "bf16"
    )
    net = CausalLM(pretrained=str(tmp_path / "bf16"))
    from scaletrain.nets.init import initialize

    initialize(net, seed=0)
    stored = saved(tmp_path / "bf16")
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    weight = net.hf.model.embed_tokens.weight
    assert torch.equal(weight, stored["model.embed_tokens.weight"].float())
    assert net.hf.lm_head.weight is weight  # still tied
    assert "dtype" not in net.standalone_config()["config"]
