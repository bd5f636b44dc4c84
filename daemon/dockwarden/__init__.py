"""dockwarden: keeps Docker containers up to date, safely."""

# The one place the version is written (pyproject.toml reads it from here). A literal, not
# importlib.metadata: that import alone costs ~80 ms of every command's start, and `dockwarden rollback`
# is timed from the keypress.
__version__ = "0.1.0"
