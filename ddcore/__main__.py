"""``python -m ddcore``: the same command line as ``dd``."""

from dd_cli.app import main

main()
