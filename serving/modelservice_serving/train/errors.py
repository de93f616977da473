"""Training failures the operator can act on: each has a reason and one clear line."""

from __future__ import annotations

from typing import Any

from ..contract import TrainingFailure


class TrainingError(Exception):
    """A failure reported in the termination message as ``{"reason", "message"}``."""

    reason: str = TrainingFailure.TRAINING_FAILED

    def __init__(self, message: str, **details: Any) -> None:
        # One line: the operator shows it in status conditions.
        super().__init__(" ".join(message.split()))
        # Extra fields of the termination message the operator acts on (camelCase).
        self.details = details

    @property
    def message(self) -> str:
        return str(self)


class InvalidSettingsError(TrainingError):
    reason: str = TrainingFailure.INVALID_SETTINGS


class DatasetNotFoundError(TrainingError):
    reason: str = TrainingFailure.DATASET_NOT_FOUND


class UnsupportedDatasetError(TrainingError):
    reason: str = TrainingFailure.UNSUPPORTED_DATASET


class DatasetDownloadFailedError(TrainingError):
    reason: str = TrainingFailure.DATASET_DOWNLOAD_FAILED


class LabelColumnMissingError(TrainingError):
    reason: str = TrainingFailure.LABEL_COLUMN_MISSING


class ShapeMismatchError(TrainingError):
    reason: str = TrainingFailure.SHAPE_MISMATCH


class OutputExistsError(TrainingError):
    """The version directory exists; ``highestVersion`` says which numbers are free."""

    reason: str = TrainingFailure.OUTPUT_EXISTS


class OutputNotWritableError(TrainingError):
    reason: str = TrainingFailure.OUTPUT_NOT_WRITABLE
