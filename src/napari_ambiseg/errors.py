"""The project's own error types: every user-facing failure is one of these, with one clear line."""


class AmbisegError(Exception):
    """Base class for napari-ambiseg errors (message is meant for the user)."""


class InputError(AmbisegError, ValueError):
    """An image, mask or data file that cannot be used as given (wrong shape, NaN, empty...)."""


class ReadError(AmbisegError, OSError):
    """A file that cannot be read (corrupt, truncated, unsupported, missing decoder...)."""


class WriteError(AmbisegError, OSError):
    """A file that cannot be written."""


class WeightsError(AmbisegError, OSError):
    """Missing, corrupt or incompatible model weights."""


class Cancelled(AmbisegError):
    """Long work stopped because the user asked."""
