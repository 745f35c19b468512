"""The selector's exceptions, in one tree.

Every error the engine raises on purpose derives from :class:`SelectorError`, so a caller (the
workers, the CLI) can map the whole family to one kind of user-facing message::

    SelectorError
    ├── ConfigError (ValueError)          an argument is invalid: optimizer, bn_mode, lr, ...
    │   └── GroupSpecError                a layer-group name or a custom group pattern is wrong
    ├── ModelLoadError                    a model reference cannot be turned into a module
    │   ├── CheckpointMismatchError       the weights file does not fit the architecture
    │   └── FactoryNotAllowedError        a "pkg.module:function" outside the allowlist
    ├── DataError (ValueError)            the data cannot be trained on as given
    │   ├── EmptySplitError               a split has no examples
    │   ├── LabelRangeError               a label is outside [0, num_classes)
    │   └── ImageShapeError               images of the wrong shape or dtype for the model
    └── MissingFileError (FileNotFoundError)   a path named in a reference does not exist

The builtin ``ValueError`` / ``FileNotFoundError`` bases keep ``except ValueError`` callers working.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "CheckpointMismatchError",
    "ConfigError",
    "DataError",
    "EmptySplitError",
    "FactoryNotAllowedError",
    "GroupSpecError",
    "ImageShapeError",
    "LabelRangeError",
    "MissingFileError",
    "ModelLoadError",
    "SelectorError",
]


class SelectorError(Exception):
    """Base class of every error the selector raises deliberately."""


class ConfigError(SelectorError, ValueError):
    """An argument has an invalid value (unknown optimizer, negative lr, ...)."""


class GroupSpecError(ConfigError):
    """A layer-group specification is wrong: unknown group name, a custom pattern matching
    nothing, an empty group. The message repeats the offending spec and suggests names."""


class ModelLoadError(SelectorError):
    """A model reference could not be loaded."""


class CheckpointMismatchError(ModelLoadError):
    """A weights file does not match the architecture; the message names the first keys."""


class FactoryNotAllowedError(ModelLoadError):
    """A ``"pkg.module:function"`` factory outside the operator's allowlist."""


class DataError(SelectorError, ValueError):
    """The data cannot be used as given."""


class EmptySplitError(DataError):
    """A split (train, val or test) holds no examples."""


class LabelRangeError(DataError):
    """A label lies outside ``[0, num_classes)``."""


class ImageShapeError(DataError):
    """Images have a shape (or dtype) that the model or the other splits do not accept."""


class MissingFileError(SelectorError, FileNotFoundError):
    """A file or directory named in a reference does not exist. ``str()`` names the path."""

    def __init__(self, path: str | Path, what: str = "file") -> None:
        self.path = Path(path)
        super().__init__(f"{what} not found: {self.path}")

    def __str__(self) -> str:  # FileNotFoundError's own __str__ would print "None"
        return str(self.args[0])
