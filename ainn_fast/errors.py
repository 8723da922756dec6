"""User-facing errors: each carries one line that says what is wrong with the input."""


class AinnError(Exception):
    """Base of the errors a user can cause; the CLI prints the message and exits 2."""


class FormatError(AinnError):
    """The bytes are not a valid .ainn file (wrong magic, truncated, corrupt, unsupported)."""


class InputError(AinnError):
    """An image or option that ainn_fast cannot code."""


class ModelMismatchError(AinnError):
    """A file made by other weights than the model at hand."""


class CheckpointError(AinnError):
    """A missing or unreadable checkpoint."""


class OptionError(InputError, ValueError):
    """An unknown option value, from the command line, the environment (AINN_BACKEND,
    AINN_ENTROPY_PATH) or the Python API (still a ValueError there)."""
