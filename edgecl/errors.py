"""Exceptions with one-line, user-facing messages."""


class EdgeclError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits non-zero."""


class ConfigError(EdgeclError):
    """A configuration file or override is invalid."""


class SourceError(EdgeclError):
    """A frame source cannot be opened (bad URI, missing path, unknown scheme)."""


class ModelLoadError(EdgeclError):
    """A model file is missing, corrupt or cannot be loaded by its backend."""


class RegistryError(EdgeclError):
    """The model registry refused an operation (unknown version, bad manifest)."""


class ReplayMemoryError(EdgeclError):
    """The replay memory refused a sample or found damage it could not repair."""


class LabelError(EdgeclError):
    """A label file or label row is malformed."""


def did_you_mean(name: str, choices, cutoff: float = 0.6) -> str:
    """A ``; did you mean 'X'?`` hint naming the closest valid choice (empty when none is close).

    Args:
        name: what the user wrote.
        choices: the valid names.
        cutoff: similarity threshold of :func:`difflib.get_close_matches` (0 always finds one).

    Returns:
        The hint, ready to append to a one-line error message.
    """
    import difflib

    match = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return f"; did you mean '{match[0]}'?" if match else ""


class NotFoundError(EdgeclError):
    """An id (queue item, version, class) names nothing that exists (HTTP 404)."""


class ConflictError(EdgeclError):
    """The operation conflicts with the current state, e.g. an item already answered (HTTP 409)."""


class StorageError(EdgeclError):
    """The state directory cannot be written (read-only, full disk)."""
