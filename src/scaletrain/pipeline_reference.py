"""torch's pipeline schedule alone on the stages scaletrain cuts: the benchmark's floor for
``strategy=pipeline``.

No Lightning, no FSDP2, no logging or checkpoints: the net of a train config, cut into
one stage per process as the pipeline strategy cuts it, a schedule of
``torch.distributed.pipelining`` and the optimizer, on batches drawn from the config's
data module. Run under torchrun, one process per stage; rank 0 prints samples/s as JSON:

    OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 -m scaletrain.pipeline_reference \\
        --schedule gpipe --microbatches 8 experiment=gpt_text model.net.dim=256
"""

import argparse
import json
import tempfile
import time
from itertools import cycle
from pathlib import Path

import lightning as L
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch.distributed.device_mesh import init_device_mesh

from scaletrain.benchmark import block_median, compose_train
from scaletrain.parallel.pipeline import (
    SCHEDULES,
    PipelineOptions,
    keep_stages,
    pipeline_stages,
    stages_per_rank,
)


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(prog="python -m scaletrain.pipeline_reference")
    parser.add_argument("--schedule", default="gpipe", choices=sorted(SCHEDULES))
    parser.add_argument("--microbatches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("overrides", nargs="*", help="of the train config")
    args = parser.parse_args(argv)

    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    ranks = dist.get_world_size()
    cfg = compose_train(args.overrides, Path(tempfile.gettempdir()))
    L.seed_everything(cfg.seed, verbose=False)
    model, datamodule = instantiate(cfg.model), instantiate(cfg.data)
    datamodule.setup("fit")

    mesh = init_device_mesh("cpu", (ranks,), mesh_dim_names=("pipeline",))
    options = PipelineOptions(
        schedule=args.schedule,
        microbatches=args.microbatches,
        stages_per_rank=stages_per_rank(args.schedule),
    )
    relays = keep_stages(model.net, model.net_plan, mesh, options)
    stages = pipeline_stages(model.net, model.net_plan, relays, ranks, torch.device("cpu"))
    last = any(stage.is_last for stage in stages)
    schedule = SCHEDULES[args.schedule](
        stages if len(stages) > 1 else stages[0],
        n_microbatches=args.microbatches,
        loss_fn=model.loss,
        scale_grads=True,
    )
    optimizer = instantiate(cfg.model.optimizer)(params=model.net.parameters())
    model.net.train()

    starts, rows = [], 0
    batches = cycle(datamodule.train_dataloader())
    for _, (inputs, targets) in zip(range(args.steps), batches, strict=False):
        starts.append(time.perf_counter())
        optimizer.zero_grad()
        schedule.step(target=targets if last else None, inputs=inputs)
        optimizer.step()
        rows = len(inputs)
    dist.barrier()
    rate = rows / block_median(starts, args.warmup, 1)
    if dist.get_rank() == 0:
        print(json.dumps({"samples_per_sec": rate}))
    dist.destroy_process_group()
    return rate


if __name__ == "__main__":
    main()
