"""The built-in plugins of DataDream.

Each module here is one plugin, declared as an entry point in ``pyproject.toml`` in the same
``ddcore`` group third-party packages use, and written exactly like a third-party plugin.
"""
