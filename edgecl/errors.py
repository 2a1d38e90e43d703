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
