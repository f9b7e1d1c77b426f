"""Errors a user can cause. The CLI prints each as one line and exits with :attr:`exit_code`."""


class SparsezooError(Exception):
    """Base class: a problem with the user's input or environment, not a bug."""

    exit_code = 2


class RecipeError(SparsezooError):
    """A recipe file is unreadable, has unknown keys, or values of the wrong type or range."""


class ModelNotFoundError(SparsezooError):
    """No timm architecture, Hub repo or local folder matches the model name."""


class WeightsUnavailableError(SparsezooError):
    """Pretrained weights were asked for but cannot be loaded (offline, missing file, mismatch)."""


class DataError(SparsezooError):
    """The dataset cannot be found or read, or its columns are not what was asked for."""


class OutputExistsError(SparsezooError):
    """The output folder exists and neither ``--resume`` nor ``--force`` was given."""


class ResumeError(SparsezooError):
    """There is nothing to resume, or the recipe differs from the run being resumed."""
