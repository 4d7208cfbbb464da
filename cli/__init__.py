"""The ``dd`` / ``datadream`` command line: parses, calls ddcore, renders with rich."""
