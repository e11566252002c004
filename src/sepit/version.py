"""The sepit version, in a module of its own: modules that record it (checkpoints, model installs) import it from
here, not from the ``sepit`` package, whose ``load`` reaches into the whole API."""

__version__ = "0.1.0"
