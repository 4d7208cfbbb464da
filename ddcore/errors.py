"""User-facing errors.

Every error a user can cause (bad input, a missing model, an unknown plugin name) is a
``DDError`` whose message is one line saying what is wrong and what to do. The CLI prints the
message alone; ``--debug`` shows the traceback.
"""


class DDError(Exception):
    """An error the user can fix; its message is shown without a traceback."""


class DataError(DDError):
    """The data (folders, split files, few-shot lists, images) is missing or malformed."""


class ModelNotFoundError(DDError):
    """A model (diffusion base, CLIP weights, captioner) cannot be loaded from anywhere."""


class PluginError(DDError):
    """A plugin is unknown, duplicated, broken or misconfigured."""


class ConfigError(DDError):
    """The run configuration is invalid."""


class StageError(DDError):
    """A stage cannot run in this state (a previous stage is missing, a mismatch of inputs)."""
