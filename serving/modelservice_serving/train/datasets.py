"""Datasets by name (``digits``, ``mnist``, ``fashion_mnist``) or from a CSV/NPZ path or URI.

Every loader returns flat float32 feature rows and integer class indices, so a model's
input is always ``[batch, features]`` whatever the source.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..download import DownloadError, DownloadPolicy, download
from .errors import (
    DatasetDownloadFailedError,
    DatasetNotFoundError,
    LabelColumnMissingError,
    ShapeMismatchError,
    UnsupportedDatasetError,
)

BUILTIN = ("digits", "mnist", "fashion_mnist")
FILE_SUFFIXES = (".csv", ".npz")
# Without a policy from the settings: the largest dataset file a download may write.
DATASET_MAX_BYTES = 1 << 30
# Names an NPZ's feature array commonly has, tried in order when it has several arrays.
NPZ_FEATURE_KEYS = ("x", "X", "features", "data", "inputs")


@dataclass(frozen=True)
class Dataset:
    """Features ``[n, f]`` float32, labels ``[n]`` int64 in ``0..len(classes)-1``."""

    name: str
    features: npt.NDArray[np.float32]
    labels: npt.NDArray[np.int64]
    classes: list[str]
    # SHA-256 of the file a CSV/NPZ dataset was read from (None for the built-in ones).
    sha256: str | None = None

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])


def load(
    spec: str, label_column: str = "label", download_policy: DownloadPolicy | None = None
) -> Dataset:
    """Loads a named dataset or a CSV/NPZ file from a path or a file/http(s)/s3 URI.

    ``download_policy`` bounds an http(s) or s3 download and holds its credentials (see
    :mod:`modelservice_serving.download`).
    """
    if spec == "digits":
        return _digits()
    if spec in ("mnist", "fashion_mnist"):
        return _keras_dataset(spec)
    parsed = urllib.parse.urlparse(spec)
    if parsed.scheme in ("http", "https", "s3"):
        path = _download(spec, Path(parsed.path).name, download_policy)
    elif parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path))
    elif parsed.scheme == "" or len(parsed.scheme) == 1:  # a plain path (or a drive letter)
        path = Path(spec)
    else:
        raise UnsupportedDatasetError(
            f"dataset URI scheme {parsed.scheme!r} is not supported (use a path, file:// or "
            f"http(s)://, s3:// with S3 keys, or one of {', '.join(BUILTIN)})"
        )
    suffix = path.suffix.lower()
    if suffix not in FILE_SUFFIXES:
        if parsed.scheme == "" and "/" not in spec and not suffix:
            raise DatasetNotFoundError(
                f"unknown dataset {spec!r}: expected one of {', '.join(BUILTIN)}"
            )
        raise UnsupportedDatasetError(f"dataset {spec!r} is neither .csv nor .npz")
    if not path.is_file():
        raise DatasetNotFoundError(f"dataset file {str(path)!r} does not exist")
    loaded = _from_csv(path, label_column) if suffix == ".csv" else _from_npz(path, label_column)
    return dataclasses.replace(loaded, sha256=_sha256(path))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return _finish("digits", np.asarray(bunch.data), np.asarray(bunch.target))


def _keras_dataset(name: str) -> Dataset:
    # Needs the network on first use (keras caches under ~/.keras); kept for real clusters.
    import keras

    module = keras.datasets.mnist if name == "mnist" else keras.datasets.fashion_mnist
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as exc:
        raise DatasetDownloadFailedError(f"could not download {name}: {exc}") from exc
    features = np.concatenate([x_train, x_test]).reshape(len(x_train) + len(x_test), -1)
    return _finish(name, features, np.concatenate([y_train, y_test]))


def _download(uri: str, filename: str, policy: DownloadPolicy | None) -> Path:
    # Through the guarded downloader: no address inside the cluster, one total deadline, a
    # byte limit, and no response body or unredacted URL in the error.
    target = Path(tempfile.mkdtemp(prefix="mso-dataset-")) / (filename or "dataset")
    try:
        download(uri, target, policy or DownloadPolicy(max_bytes=DATASET_MAX_BYTES))
    except DownloadError as exc:
        raise DatasetDownloadFailedError(f"could not download: {exc}") from exc
    return target


def _from_csv(path: Path, label_column: str) -> Dataset:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ShapeMismatchError(f"{path.name} is empty")
        header = [name.strip() for name in header]
        if label_column not in header:
            raise LabelColumnMissingError(
                f"label column {label_column!r} not in {path.name} (columns: {', '.join(header)})"
            )
        label_index = header.index(label_column)
        labels: list[str] = []
        rows: list[list[str]] = []
        for line_number, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise ShapeMismatchError(
                    f"{path.name} line {line_number} has {len(row)} fields, header has "
                    f"{len(header)}"
                )
            labels.append(row[label_index].strip())
            rows.append(row[:label_index] + row[label_index + 1 :])
    try:
        features = np.asarray(rows, dtype=np.float32)
    except ValueError as exc:
        raise ShapeMismatchError(f"{path.name} has non-numeric feature values: {exc}") from exc
    return _finish(path.name, features.reshape(len(rows), len(header) - 1), np.asarray(labels))


def _from_npz(path: Path, label_column: str) -> Dataset:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ShapeMismatchError(f"{path.name} is not a readable NPZ archive: {exc}") from exc
    with archive:
        keys = list(archive.files)
        if label_column not in keys:
            raise LabelColumnMissingError(
                f"label array {label_column!r} not in {path.name} (arrays: {', '.join(keys)})"
            )
        others = [key for key in keys if key != label_column]
        feature_key = next((key for key in NPZ_FEATURE_KEYS if key in others), None)
        if feature_key is None and len(others) == 1:
            feature_key = others[0]
        if feature_key is None:
            raise ShapeMismatchError(
                f"{path.name} needs one feature array (named one of {', '.join(NPZ_FEATURE_KEYS)})"
                f" beside {label_column!r}, found: {', '.join(others) or 'none'}"
            )
        features = archive[feature_key]
        labels = archive[label_column]
    if features.ndim < 2:
        features = features.reshape(-1, 1)
    return _finish(path.name, features.reshape(len(features), -1), labels)


def _finish(
    name: str, features: npt.NDArray[np.generic], labels: npt.NDArray[np.generic]
) -> Dataset:
    labels = labels.reshape(-1) if labels.ndim > 1 and labels.size == len(labels) else labels
    if labels.ndim != 1:
        raise ShapeMismatchError(
            f"{name}: labels must be one value per row, got shape {labels.shape}"
        )
    if len(features) != len(labels):
        raise ShapeMismatchError(f"{name}: {len(features)} feature rows but {len(labels)} labels")
    if len(features) == 0:
        raise ShapeMismatchError(f"{name} has no rows")
    try:
        feature_array = features.astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise ShapeMismatchError(f"{name} has non-numeric features: {exc}") from exc
    if not np.isfinite(feature_array).all():
        raise ShapeMismatchError(f"{name} has missing or infinite feature values")
    # Class names are kept as strings so CSV labels like "cat" round-trip into metadata.
    values = labels.astype(str)
    classes = [str(value) for value in np.unique(values)]
    if all(_is_int(value) for value in classes):
        classes.sort(key=int)  # numeric labels keep numeric order: "10" after "9"
    lookup = {value: position for position, value in enumerate(classes)}
    indices = np.fromiter((lookup[value] for value in values), dtype=np.int64, count=len(values))
    if len(classes) < 2:
        raise ShapeMismatchError(f"{name} has a single class; a classifier needs at least two")
    return Dataset(name, feature_array, indices, classes)


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True
