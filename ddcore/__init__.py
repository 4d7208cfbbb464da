"""ddcore: the stage pipeline behind DataDream and its baselines.

The core knows stage kinds (adapter, prompt builder, generator, filter, classifier), datasets
and methods, never a particular one: every concrete stage is a plugin (see ``hookspecs``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("datadream")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
