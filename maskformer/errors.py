"""The errors a user can cause, in one place. Each is reported by the command line as one
`error:` line (exit code 2), never as a traceback; code that raises them names the file, record
or key at fault."""

from __future__ import annotations

import pickle


class MaskFormerError(Exception):
    """Base of every user-facing error of this package."""


class ConfigError(MaskFormerError, ValueError):
    """A configuration key is unknown, its value has the wrong type, or values do not fit."""


class CheckpointError(MaskFormerError, ValueError):
    """A checkpoint or model directory cannot be read or does not fit the model."""


class UnsafePickleError(CheckpointError, pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list."""


class DataError(MaskFormerError):
    """A data problem (bad input file or record, bad arguments)."""
