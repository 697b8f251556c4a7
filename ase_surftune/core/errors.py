"""Exception types raised by ase_surftune.

Every error that comes from bad user input derives from :class:`SurfTuneError`
(and from ``ValueError`` where the input value is at fault), so callers can catch
one type and the message always names the offending value.
"""

from __future__ import annotations


class SurfTuneError(Exception):
    """Base class of every ase_surftune error."""


class ModelLoadError(SurfTuneError, ValueError):
    """A model spec could not be resolved or loaded (unknown name, offline, bad file)."""


class BundleError(SurfTuneError, ValueError):
    """A model bundle file is missing, corrupt, truncated or of an unknown format."""


class UnsupportedElementError(SurfTuneError, ValueError):
    """A structure contains an element the model was not trained on."""


class InvalidStructureError(SurfTuneError, ValueError):
    """A structure cannot be evaluated (NaN/inf positions, no cell where one is needed...)."""


class HeadError(SurfTuneError, ValueError):
    """An unknown or duplicate head name."""


class ConfigError(SurfTuneError, ValueError):
    """A YAML/dict configuration is invalid."""


class DataError(SurfTuneError, ValueError):
    """Labelled data are missing, inconsistent or malformed."""


class TaskFailedError(SurfTuneError, RuntimeError):
    """One or more tasks of a sweep failed (the message lists each with its error)."""


class UnsafeLoadError(BundleError, ModelLoadError):
    """A file can only be read with Python pickle (which can run arbitrary code) and the
    caller did not pass ``trust=True`` (CLI: ``--trust-pickle``)."""


class LockedError(SurfTuneError, RuntimeError):
    """An output folder or label file is in use by another process (message names its PID)."""


class OutputExistsError(SurfTuneError, FileExistsError):
    """An output folder already holds a run and neither resume nor overwrite was asked for."""


class TrainingDivergedError(SurfTuneError, RuntimeError):
    """Training produced a non-finite loss or weights (message names the epoch and step)."""


class NonFiniteOutputError(SurfTuneError, ArithmeticError):
    """A model returned NaN/inf energy, forces or stress."""


class MissingDependencyError(SurfTuneError, ImportError):
    """An optional extra is not installed (message names the ``pip install`` to run)."""


class SizeLimitError(SurfTuneError, ValueError):
    """A requested structure is larger than a documented limit (message gives the estimate)."""
