"""Lightning's ModelParallelStrategy on scaletrain's 3-D device mesh (pipeline x data x
tensor parallel, ``scaletrain.parallel.layout``), with atomic and background distributed
checkpoints."""

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from scaletrain import compat
from scaletrain.checkpoint.atomic import (
    InBackground,
    SaveFailed,
    remove,
    replace_path,
    scratch_path,
    state_bytes,
)
from scaletrain.checkpoint.background import BackgroundWrites, snapshot
from scaletrain.checkpoint.consolidate import META_FILE
from scaletrain.parallel.layout import MESH_DIMENSIONS, ParallelLayout


class ShardedStrategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy on the 3-D device mesh of ``layout``, whose
    distributed checkpoints replace the previous version of a path atomically: all ranks
    write their shards into a scratch directory, then rank 0 swaps it into place (see
    :mod:`scaletrain.checkpoint.atomic`)."""

    def __init__(self, layout: ParallelLayout, save_distributed_checkpoint: bool) -> None:
        super().__init__(
            data_parallel_size=layout.data_parallel_size,
            tensor_parallel_size=layout.tensor_parallel_size,
            save_distributed_checkpoint=save_distributed_checkpoint,
        )
        self.layout = layout
        self.background = BackgroundWrites()  # sharded saves training does not wait for
        self.background_group: Any = None  # their collectives, apart from training's

    def setup_environment(self) -> None:
        compat.set_up_with_mesh(
            self,
            lambda: init_device_mesh(
                self.root_device.type, self.layout.mesh_shape, mesh_dim_names=MESH_DIMENSIONS
            ),
        )

    def save_checkpoint(
        self,
        checkpoint: dict[str, Any],
        filepath: str | os.PathLike,
        storage_options: Any | None = None,
    ) -> None:
        path = Path(self.broadcast(filepath))
        if not compat.saves_distributed_checkpoint(self):
            # one full file, written by rank 0 through the atomic CheckpointIO
            return compat.save_single_file(self, checkpoint, path, storage_options)
        if isinstance(storage_options, InBackground):
            return self.save_sharded_in_background(checkpoint, path, storage_options.then)
        self.background.wait()  # saves are written in the order they were made
        self.save_sharded(checkpoint, path)

    def save_sharded_in_background(
        self, checkpoint: dict[str, Any], path: Path, then: Callable[[], None] | None
    ) -> None:
        """Write a distributed checkpoint at ``path`` while training goes on: each rank's
        shards are copied to host memory now (``torch.distributed.checkpoint.async_save``)
        and written by a background thread, whose collectives use a process group of
        their own; once every rank's are written, rank 0 swaps the checkpoint into place
        as a synchronous save does, then runs ``then``."""
        self.background.wait()
        scratch = scratch_path(path)
        if self.global_rank == 0:
            remove(scratch)  # left by a save that was killed
        self.barrier("scratch directory cleared")
        if self.background_group is None:
            self.background_group = dist.new_group(backend="gloo")
        needed = state_bytes(checkpoint)

        def stage() -> tuple[Any, dict[str, Any]]:
            shards = {"state_dict": checkpoint.pop("state_dict")}
            for index, state in enumerate(checkpoint.pop("optimizer_states", [])):
                shards[f"optimizer_{index}"] = state
            written = dcp.async_save(
                shards, checkpoint_id=scratch, process_group=self.background_group
            )
            return written, snapshot(checkpoint)  # the rest, as it is at this step

        def put_in_place(staged: tuple[Any, dict[str, Any]]) -> None:
            written, rest = staged
            try:
                written.result()  # every rank's shards written (rank 0 gathers their word)
            except BaseException as error:
                shutil.rmtree(scratch, ignore_errors=True)
                raise SaveFailed(path, needed, error, ranks=self.world_size) from error
            if self.global_rank == 0:
                try:
                    torch.save(rest, scratch / META_FILE)
                    replace_path(scratch, path)
                except (OSError, RuntimeError) as error:
                    shutil.rmtree(scratch, ignore_errors=True)
                    raise SaveFailed(path, needed, error) from error
                if then is not None:
                    then()

        self.background.submit(stage, put_in_place)

    def load_checkpoint(self, checkpoint_path: Any, weights_only: bool | None = None) -> dict:
        """Lightning's load, which needs a net of DTensors; a net that FSDP2 and tensor
        parallelism left plain (one data-parallel rank, e.g. a pipeline stage) is read
        from the distributed checkpoint here, each rank its own parameters and their
        optimizer state. Returns the rest of the checkpoint, as Lightning's does."""
        path = Path(self.broadcast(checkpoint_path))
        if any(isinstance(p, DTensor) for p in self.model.parameters()) or not path.is_dir():
            return super().load_checkpoint(checkpoint_path, weights_only=weights_only)
        strict = self.lightning_module.strict_loading
        model = {"state_dict": get_model_state_dict(self.model)}
        dcp.load(model, checkpoint_id=path)
        set_model_state_dict(
            self.model, model["state_dict"], options=StateDictOptions(strict=strict)
        )
        for index, optimizer in enumerate(self.optimizers):
            key = f"optimizer_{index}"
            state = {key: get_optimizer_state_dict(self.model, optimizer)}
            dcp.load(state, checkpoint_id=path)
            set_optimizer_state_dict(self.model, optimizer, optim_state_dict=state[key])
        return torch.load(path / META_FILE, weights_only=weights_only)

    def remove_checkpoint(self, filepath: str | os.PathLike) -> None:
        self.background.wait()  # a checkpoint goes only once the one replacing it is written
        super().remove_checkpoint(filepath)

    def teardown(self) -> None:
        self.background.wait()  # training ends with every checkpoint written
        super().teardown()

    def save_sharded(self, checkpoint: dict[str, Any], path: Path) -> None:
        """Write a distributed checkpoint at ``path``, replacing the one there at once."""
        scratch = scratch_path(path)
        if self.global_rank == 0:
            remove(scratch)  # left by a save that was killed
        self.barrier("scratch directory cleared")
        needed = state_bytes(checkpoint)  # Lightning's save takes the tensors out of it
        try:
            super().save_checkpoint(checkpoint, scratch)
        except BaseException as error:  # every rank hears of any rank's failed write
            if not isinstance(error, CheckpointException | OSError | RuntimeError):
                raise
            shutil.rmtree(scratch, ignore_errors=True)  # every rank: none may wait on another
            raise SaveFailed(path, needed, error, ranks=self.world_size) from error
        self.barrier("every shard written")
        if self.global_rank == 0:
            replace_path(scratch, path)
        self.barrier("checkpoint in place")
