"""The project's error types. Every bad input raises :class:`BratsError` naming the file and the problem."""


class BratsError(ValueError):
    """Bad input (case files, archives, checkpoints, splits): the message names the file and the problem."""


class CheckpointError(BratsError):
    """A saved checkpoint (or training state) is missing, corrupt or does not match the running code."""
