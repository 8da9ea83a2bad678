"""SLURM: what a cluster's partitions offer, whether a job's request fits them, and how a
submitted job fares while it waits (:mod:`scaletrain.slurm.cluster`,
:mod:`scaletrain.slurm.request`). Hydra's launcher for SLURM, built on these, is
``hydra_plugins.scaletrain_launcher`` (Hydra finds launchers only in that package)."""
