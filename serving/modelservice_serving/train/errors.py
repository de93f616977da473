"""Training failures the operator can act on: each has a reason and one clear line."""

from __future__ import annotations

from typing import Any


class TrainingError(Exception):
    """A failure reported in the termination message as ``{"reason", "message"}``."""

    reason = "TrainingFailed"

    def __init__(self, message: str, **details: Any) -> None:
        # One line: the operator shows it in status conditions.
        super().__init__(" ".join(message.split()))
        # Extra fields of the termination message the operator acts on (camelCase).
        self.details = details

    @property
    def message(self) -> str:
        return str(self)


class InvalidSettingsError(TrainingError):
    reason = "InvalidSettings"


class DatasetNotFoundError(TrainingError):
    reason = "DatasetNotFound"


class UnsupportedDatasetError(TrainingError):
    reason = "UnsupportedDataset"


class DatasetDownloadFailedError(TrainingError):
    reason = "DatasetDownloadFailed"


class LabelColumnMissingError(TrainingError):
    reason = "LabelColumnMissing"


class ShapeMismatchError(TrainingError):
    reason = "ShapeMismatch"


class OutputExistsError(TrainingError):
    """The version directory exists; ``highestVersion`` says which numbers are free."""

    reason = "OutputExists"


class OutputNotWritableError(TrainingError):
    reason = "OutputNotWritable"
