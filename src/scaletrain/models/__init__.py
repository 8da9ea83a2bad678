"""LightningModules: loss, steps, metrics and optimizers around a plain ``nets`` module."""
