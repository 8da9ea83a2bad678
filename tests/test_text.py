"""Language-model data: byte tokens in fixed windows, targets shifted by one."""

import pytest
import torch

from scaletrain.data.text import TextDataModule, stdlib_sources
from scaletrain.errors import ConfigError


def test_default_corpus_is_the_standard_library_source():
    sources = stdlib_sources()
    assert len(sources) > 100
    assert {"os.py", "argparse.py"} <= {path.name for path in sources}


def test_windows_predict_the_next_byte(tmp_path):
    text = bytes(range(256)) * 20  # 5,120 bytes
    (tmp_path / "a.txt").write_bytes(text)
    dm = TextDataModule(paths=[str(tmp_path / "a.txt")], context_length=15, batch_size=4)
    dm.setup()
    sizes = {name: len(split) for name, split in dm.splits.items()}
    assert sum(sizes.values()) == (len(text) + 1) // 16  # +1: the file's separator byte
    inputs, targets = dm.splits["train"][[0, 1]]
    assert inputs.shape == targets.shape == (2, 15)
    assert torch.equal((inputs[:, 1:]), targets[:, :-1])
    assert torch.equal(
        (inputs + 1) % 256, targets
    )  # in this text each byte follows its predecessor


def test_split_is_fixed_by_split_seed(tmp_path):
    (tmp_path / "a.txt").write_bytes(bytes(range(256)) * 40)

    def first_val_window(split_seed):
        dm = TextDataModule(
            paths=[str(tmp_path / "a.txt")], context_length=31, split_seed=split_seed
        )
        dm.setup()
        return dm.splits["val"].inputs[0].tolist()

    assert first_val_window(0) == first_val_window(0)
    assert first_val_window(0) != first_val_window(1)


def test_missing_file_is_a_config_error(tmp_path):
    dm = TextDataModule(paths=[str(tmp_path / "nope.txt")])
    with pytest.raises(ConfigError, match=r"data.paths: no such file\(s\): .*nope.txt"):
        dm.setup()


def test_corpus_too_small_for_the_context(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"tiny")
    dm = TextDataModule(paths=[str(tmp_path / "a.txt")], context_length=128)
    with pytest.raises(ConfigError, match="data.context_length=128: the corpus has 5 tokens"):
        dm.setup()
