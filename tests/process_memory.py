"""A callback that writes each rank's data segment size (VmData: the private writable
memory that RLIMIT_DATA limits) at the end of training to ``<path>.rank<N>``, for tests
that run a process under a memory limit."""

from pathlib import Path

from lightning.pytorch.callbacks import Callback


def vm_data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmData in /proc/self/status")


class SaveDataSize(Callback):
    def __init__(self, path: str) -> None:
        self.path = path

    def on_train_end(self, trainer, pl_module) -> None:
        Path(f"{self.path}.rank{trainer.global_rank}").write_text(str(vm_data_bytes()))
