"""The project's error types. Every bad input raises :class:`BratsError` naming the file and the problem."""


class BratsError(ValueError):
    """Bad input (case files, archives, artifacts, splits): the message names the file and the problem."""


class ArtifactError(BratsError):
    """A saved model artifact is missing, corrupt or does not match the running code."""
