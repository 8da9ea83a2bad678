"""What scaletrain reads from a SLURM cluster, and how it judges a job's request against
a partition, without a cluster: sinfo's and squeue's text as SLURM 22.05 prints it."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from hydra_plugins.scaletrain_launcher.slurm_launcher import resumed
from scaletrain.config import CONFIG_DIR
from scaletrain.slurm.cluster import gpu_count, minutes, never_starts, parse_sinfo, parse_squeue
from scaletrain.slurm.request import request_problems

SINFO = """debug*|1|2|21694|(null)|4:00:00
gpu|2|64|512000|gpu:a100:8(S:0-1)|2-00:00:00
gpu|1|128|1024000|gpu:a100:4,mps:100|2-00:00:00
long|4|32|256000|(null)|infinite
"""


def test_sinfo_gives_each_partitions_largest_node_and_limits():
    debug, gpu, long = parse_sinfo(SINFO)
    assert debug.name == "debug" and debug.default and not gpu.default
    assert (debug.nodes, debug.cpus, debug.memory_mb, debug.gpus) == (1, 2, 21694, 0)
    assert debug.time_limit_min == 240
    # two groups of nodes in one partition: their count adds up, the largest node counts
    assert (gpu.nodes, gpu.cpus, gpu.memory_mb, gpu.gpus) == (3, 128, 1024000, 8)
    assert gpu.time_limit_min == 2 * 24 * 60
    assert long.time_limit_min is None


@pytest.mark.parametrize(
    "limit, expected",
    [
        ("30", 30),
        ("30:00", 30),
        ("30:01", 31),
        ("4:00:00", 240),
        ("1-00:00:00", 1440),
        ("1-2", 1560),
        ("UNLIMITED", None),
    ],
)
def test_time_limits_in_minutes(limit, expected):
    assert minutes(limit) == expected


def test_gpus_of_a_node():
    assert gpu_count("(null)") == 0
    assert gpu_count("gpu:8") == 8
    assert gpu_count("gpu:a100:4(S:0-1),gpu:v100:2") == 6
    assert gpu_count("mps:100") == 0


def test_a_request_that_fits_has_no_problems():
    params = {
        "nodes": 2,
        "tasks_per_node": 8,
        "gpus_per_node": 8,
        "cpus_per_task": 8,
        "mem_gb": 400,
        "timeout_min": 600,
        "partition": "gpu",
    }
    assert request_problems(params, parse_sinfo(SINFO)) == []


def test_every_setting_the_partition_cannot_satisfy_is_named_with_its_maximum():
    params = {
        "nodes": 4,
        "tasks_per_node": 8,
        "gpus_per_node": 8,
        "cpus_per_task": 8,
        "mem_gb": 64,
        "timeout_min": 300,
        "partition": None,
    }
    problems = request_problems(params, parse_sinfo(SINFO))
    assert problems == [
        "hydra.launcher.nodes=4 (trainer.num_nodes): partition debug has 1 node",
        "hydra.launcher.cpus_per_task=8 x tasks_per_node=8 (trainer.devices) = 64 CPUs on a "
        "node: a node of partition debug has 2",
        "hydra.launcher.gpus_per_node=8 (trainer.devices under trainer=gpu): a node of "
        "partition debug has no GPUs (use trainer=cpu)",
        "hydra.launcher.mem_gb=64: a node of partition debug has 21 GB",
        "hydra.launcher.timeout_min=300: partition debug allows at most 240 minutes",
    ]


def test_an_unknown_partition_and_a_device_count_that_is_no_number():
    partitions = parse_sinfo(SINFO)
    assert request_problems({"partition": "a100", "nodes": 1, "tasks_per_node": 1}, partitions) == [
        "hydra.launcher.partition=a100: no such partition; the cluster has: debug, gpu, long"
    ]
    (problem,) = request_problems({"nodes": 1, "tasks_per_node": "auto"}, partitions)
    assert problem.startswith("hydra.launcher.tasks_per_node=auto (trainer.devices")


def test_pending_reasons_that_never_clear():
    assert never_starts("PartitionConfig") and never_starts("QOSMaxCpuPerJobLimit")
    assert never_starts("AssocMaxWallDurationPerJobLimit")
    for clears in (
        "Resources",
        "Priority",
        "BeginTime",
        "ReqNodeNotAvail",
        "QOSMaxJobsPerUserLimit",
    ):
        assert not never_starts(clears)


def test_squeue_lines():
    (array, single) = parse_squeue(
        "8_[0-1%2]|8|PENDING|PartitionConfig|/s/.submitit/x.sh\n12|12|RUNNING|None|/s/job.sh\n"
    )
    assert (array.job_id, array.array_id, array.reason) == ("8_[0-1%2]", "8", "PartitionConfig")
    assert (single.state, single.command) == ("RUNNING", "/s/job.sh")


def test_a_requeued_job_resumes_from_its_last_checkpoint():
    assert resumed(["model.optimizer.lr=0.1", "ckpt_path=/x.ckpt"]) == [
        "model.optimizer.lr=0.1",
        "ckpt_path=last",
    ]


@pytest.mark.parametrize("trainer, gpus", [("gpu", 4), ("cpu", 0), ("default", 0)])
def test_the_launcher_follows_the_trainer_and_asks_for_gpus_only_for_a_gpu_run(trainer, gpus):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                f"trainer={trainer}",
                "trainer.num_nodes=2",
                "trainer.devices=4",
                "paths.output_dir=/unused",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.scaletrain_launcher.slurm_launcher.SlurmLauncher"
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 4, gpus)
