"""Preprocess, build, train, evaluate and export one model version."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from .. import credentials, report
from ..download import DownloadPolicy, parse_networks
from ..export import save_version
from ..redact import redact_url
from ..settings import TrainSettings
from ..workers import clear_rendezvous
from . import datasets
from .distribution import Placement
from .errors import DatasetDownloadFailedError, InvalidSettingsError
from .output import StagedOutput, version_from_dir
from .scaling import fit_scaling

log = logging.getLogger(__name__)

INPUT_NAME = "inputs"
# A seed for the split only, so every worker of a cluster holds out the same rows.
DEFAULT_SPLIT_SEED = 0


@dataclass(frozen=True)
class Splits:
    x_train: npt.NDArray[np.float32]
    y_train: npt.NDArray[np.int64]
    x_val: npt.NDArray[np.float32]
    y_val: npt.NDArray[np.int64]
    x_test: npt.NDArray[np.float32]
    y_test: npt.NDArray[np.int64]


@dataclass(frozen=True)
class TrainingResult:
    version: int | None
    uri: str
    metrics: dict[str, float]
    trained_at: str
    lineage: dict[str, Any] = field(default_factory=dict)


def _lineage(settings: TrainSettings, data: datasets.Dataset) -> dict[str, Any]:
    """Where a version came from: the dataset (URI redacted, SHA-256), the hyperparameters."""
    return {
        "datasetUri": redact_url(settings.dataset),
        "datasetSha256": data.sha256,
        "hyperparameters": {
            "epochs": settings.epochs,
            "batchSize": settings.batch_size,
            "learningRate": settings.learning_rate,
            "hiddenUnits": list(settings.hidden_units),
            "validationSplit": settings.validation_split,
            "testSplit": settings.test_split,
            "seed": settings.seed,
        },
    }


def download_policy(settings: TrainSettings) -> DownloadPolicy:
    """The limits of a dataset download: allowed networks, deadline, bytes, credentials."""
    try:
        found = credentials.read(settings.dataset_credentials_dir)
        return DownloadPolicy(
            max_bytes=settings.dataset_max_bytes,
            deadline_s=settings.download_timeout_s,
            allowed_networks=parse_networks(settings.download_allow_networks),
            headers=found.headers,
            s3=found.s3,
        )
    except (credentials.CredentialsError, ValueError) as exc:
        raise DatasetDownloadFailedError(str(exc)) from exc


def split(data: datasets.Dataset, settings: TrainSettings) -> Splits:
    """Stratified train/validation/test split (plain split when a class is too small)."""
    from sklearn.model_selection import train_test_split

    seed = settings.seed if settings.seed is not None else DEFAULT_SPLIT_SEED
    x, y = data.features, data.labels

    def cut(x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], share: float) -> list[Any]:
        held = max(1, round(len(y) * share))
        if held >= len(y):
            raise InvalidSettingsError(
                f"{data.name} has {len(y)} rows: too few to hold out {share:.0%}"
            )
        try:
            return list(train_test_split(x, y, test_size=held, random_state=seed, stratify=y))
        except ValueError:
            return list(train_test_split(x, y, test_size=held, random_state=seed))

    x_rest, x_test, y_rest, y_test = cut(x, y, settings.test_split)
    if settings.validation_split > 0:
        share = settings.validation_split / (1 - settings.test_split)
        x_train, x_val, y_train, y_val = cut(x_rest, y_rest, share)
    else:
        x_train, y_train = x_rest, y_rest
        x_val, y_val = x_rest[:0], y_rest[:0]
    return Splits(x_train, y_train, x_val, y_val, x_test, y_test)


def build_model(
    num_features: int, num_classes: int, settings: TrainSettings, x_train: npt.NDArray[np.float32]
) -> Any:
    """Scaling lives inside the model (a Normalization layer), so clients send raw features.

    The layer's mean and variance come from :func:`scaling.fit_scaling`, floored so that a
    feature constant in training cannot blow a request up (see that module).
    """
    import keras

    fitted = fit_scaling(x_train)
    normalizer = keras.layers.Normalization(
        mean=fitted.mean, variance=fitted.variance, name="scale"
    )
    inputs = keras.Input(shape=(num_features,), name=INPUT_NAME)
    x = normalizer(inputs)
    for index, units in enumerate(settings.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"dense_{index}")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=settings.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _progress_callback(epochs: int) -> Any:
    import keras

    class EpochProgress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            values = logs or {}
            report.epoch(
                epoch + 1,
                epochs,
                **{
                    key: values.get(key) for key in ("loss", "accuracy", "val_loss", "val_accuracy")
                },
            )

    return EpochProgress()


def _as_batches(
    x: npt.NDArray[np.float32], y: npt.NDArray[np.int64], batch: int, shuffle_seed: int | None
) -> Any:
    import tensorflow as tf

    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None or len(y) > 0:
        data = data.shuffle(len(y), seed=shuffle_seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    # Each worker holds the full arrays; shard by element so workers see disjoint rows.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return data.batch(batch).with_options(options)


def _fit_multi_worker(
    model: Any,
    strategy: Any,
    train_batches: Any,
    validation: Any,
    test_batches: Any,
    epochs: int,
    global_batch: int,
    progress: Any,
) -> tuple[float, float]:
    """Trains with ``strategy.run`` per step; returns test (loss, accuracy)."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        per_example_loss = keras.losses.SparseCategoricalCrossentropy(reduction=None)
    optimizer = model.optimizer
    total = tf.distribute.ReduceOp.SUM

    def sums(labels: Any, probabilities: Any) -> tuple[Any, Any, Any, Any]:
        losses = per_example_loss(labels, probabilities)
        predicted = tf.argmax(probabilities, axis=1, output_type=labels.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return losses, tf.reduce_sum(losses), correct, tf.cast(tf.size(labels), tf.float32)

    def replica_train(features: Any, labels: Any) -> tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            probabilities = model(features, training=True)
            losses, loss_sum, correct, count = sums(labels, probabilities)
            scaled = tf.nn.compute_average_loss(losses, global_batch_size=global_batch)
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        return loss_sum, correct, count

    def replica_eval(features: Any, labels: Any) -> tuple[Any, Any, Any]:
        _, loss_sum, correct, count = sums(labels, model(features, training=False))
        return loss_sum, correct, count

    @tf.function  # type: ignore[untyped-decorator]
    def train_step(batch: Any) -> list[Any]:
        results = strategy.run(replica_train, args=batch)
        return [strategy.reduce(total, value, axis=None) for value in results]

    @tf.function  # type: ignore[untyped-decorator]
    def eval_step(batch: Any) -> list[Any]:
        results = strategy.run(replica_eval, args=batch)
        return [strategy.reduce(total, value, axis=None) for value in results]

    def run(step: Any, batches: Any) -> tuple[float, float]:
        loss_sum = correct = count = 0.0
        for batch in strategy.experimental_distribute_dataset(batches):
            batch_loss, batch_correct, batch_count = step(batch)
            loss_sum += float(batch_loss)
            correct += float(batch_correct)
            count += float(batch_count)
        return loss_sum / max(count, 1.0), correct / max(count, 1.0)

    for epoch in range(epochs):
        logs = dict(zip(("loss", "accuracy"), run(train_step, train_batches), strict=True))
        if validation is not None:
            logs.update(zip(("val_loss", "val_accuracy"), run(eval_step, validation), strict=True))
        progress.on_epoch_end(epoch, logs)
    return run(eval_step, test_batches)


def train(settings: TrainSettings, place: Placement) -> TrainingResult:
    """The whole workflow; raises :class:`TrainingError` for anything the user can fix."""
    import keras
    import tensorflow as tf

    if place.is_chief:
        # Fail before training, not after: the version must not exist and the store be writable.
        StagedOutput(settings.output).discard()
    if settings.seed is not None:
        keras.utils.set_random_seed(settings.seed)
        tf.config.experimental.enable_op_determinism()
    data = datasets.load(settings.dataset, settings.label_column, download_policy(settings))
    parts = split(data, settings)
    log.info(
        "dataset ready",
        extra={
            "dataset": data.name,
            "datasetUri": redact_url(settings.dataset),
            "datasetSha256": data.sha256,
            "features": data.num_features,
            "classes": len(data.classes),
            "train": len(parts.y_train),
            "validation": len(parts.y_val),
            "test": len(parts.y_test),
        },
    )
    global_batch = settings.batch_size * place.strategy.num_replicas_in_sync
    with place.strategy.scope():
        model = build_model(data.num_features, len(data.classes), settings, parts.x_train)
    validation = (
        _as_batches(parts.x_val, parts.y_val, global_batch, None) if len(parts.y_val) else None
    )
    train_batches = _as_batches(parts.x_train, parts.y_train, global_batch, settings.seed)
    test_batches = _as_batches(parts.x_test, parts.y_test, global_batch, None)
    progress = _progress_callback(settings.epochs)
    if place.workers > 1:
        # Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585):
        # a plain distributed loop over the same model and optimizer instead.
        loss, accuracy = _fit_multi_worker(
            model, place.strategy, train_batches, validation, test_batches,
            settings.epochs, global_batch, progress,
        )  # fmt: skip
    else:
        model.fit(
            train_batches,
            validation_data=validation,
            epochs=settings.epochs,
            shuffle=False,  # the tf.data pipeline shuffles, seeded
            verbose=0,
            callbacks=[progress],
        )
        loss, accuracy = model.evaluate(test_batches, verbose=0)
    metrics = {"accuracy": round(float(accuracy), 6), "loss": round(float(loss), 6)}
    trained_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    version = (
        settings.version if settings.version is not None else version_from_dir(settings.output)
    )
    lineage = _lineage(settings, data)
    save_version(
        model,
        settings.output,
        metrics=metrics,
        version=version,
        classes=data.classes,
        chief=place.is_chief,
        trained_at=trained_at,
        metadata={
            **lineage,
            "dataset": data.name,
            "workers": place.workers,
            "hyperparameters": {
                **lineage["hyperparameters"],
                "optimizer": "adam",
                "activation": "relu",
            },
        },
    )
    if place.workers > 1 and place.is_chief:
        clear_rendezvous()
    return TrainingResult(version, str(settings.output), metrics, trained_at, lineage)


def configure_threads() -> None:
    """Modest TensorFlow thread pools: pods share nodes, and tiny models gain nothing."""
    import tensorflow as tf

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(min(4, cores or 1))
        tf.config.threading.set_inter_op_parallelism_threads(2)
    except RuntimeError:  # TensorFlow already started in this process: keep its pools
        pass
