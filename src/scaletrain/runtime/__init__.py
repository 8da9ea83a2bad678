"""The processes of a job: ranks, how Lightning starts them, signals, quiet output."""
