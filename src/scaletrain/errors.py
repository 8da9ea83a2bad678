"""The error a user fixes by changing a setting: every layer may raise it, the command
line reports it as one line per problem (see :mod:`scaletrain.cli.errors`)."""


class ConfigError(ValueError):
    """One or more settings are invalid; each message line names a setting and what is valid."""

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def check_shape(setting: str, value: int, expected: int, dataset: str) -> None:
    """Raise :class:`ConfigError` when a fixed property of a dataset is set differently."""
    if value != expected:
        raise ConfigError(f"{setting}={value}: the {dataset} data has {expected}; use {expected}")
