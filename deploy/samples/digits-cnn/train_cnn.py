"""Your own training code, run by a ModelService: a small Keras CNN on the 8x8 digits images.

The operator runs this file in your image (``spec.training.image`` + ``command``) with the
same volumes and environment as the built-in trainer: ``MSO_OUTPUT`` (the version directory
to write), ``MSO_VERSION``, ``MSO_TERMINATION_LOG``, ``MSO_DATASET``, ``MSO_EPOCHS``,
``MSO_BATCH_SIZE``, ``MSO_LEARNING_RATE``. It speaks the same contract through
``modelservice_serving.report`` (progress lines, the result) and ``save_version`` (the
SavedModel and metadata.json the server loads), so the quality gate and the server treat it
like any version.

Its own preprocessing lives inside the model: the server receives 64 raw pixel values
(0..16) per image, the model scales them to 0..1 and reshapes them to 8x8x1 for the
convolutions.
"""

from __future__ import annotations

import os
import sys

from modelservice_serving import report
from modelservice_serving.export import save_version

SEED = 0


def load_digits() -> tuple[object, object]:
    """The dataset of ``MSO_DATASET``: this sample knows scikit-learn's digits only."""
    dataset = os.environ.get("MSO_DATASET", "digits")
    if dataset != "digits":
        raise FileNotFoundError(f"this sample trains on 'digits' only, not {dataset!r}")
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return bunch.data.astype("float32"), bunch.target.astype("int64")


def build_model(learning_rate: float) -> object:
    import keras

    inputs = keras.Input(shape=(64,), name="pixels")
    x = keras.layers.Rescaling(1.0 / 16.0, name="to_unit_range")(inputs)
    x = keras.layers.Reshape((8, 8, 1), name="to_image")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2)(x)
    x = keras.layers.Dense(64, activation="relu")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="digit")(x)
    model = keras.Model(inputs, outputs, name="digits_cnn")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def main() -> int:
    epochs = int(os.environ.get("MSO_EPOCHS", "10"))
    batch_size = int(os.environ.get("MSO_BATCH_SIZE", "32"))
    learning_rate = float(os.environ.get("MSO_LEARNING_RATE", "0.001"))
    try:
        features, labels = load_digits()
    except FileNotFoundError as exc:
        return report.failed("DatasetNotFound", str(exc))

    import keras
    from sklearn.model_selection import train_test_split

    keras.utils.set_random_seed(SEED)
    x_train, x_test, y_train, y_test = train_test_split(
        features, labels, test_size=0.2, random_state=SEED, stratify=labels
    )
    model = build_model(learning_rate)

    class Progress(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            report.epoch(epoch + 1, epochs, **(logs or {}))

    model.fit(
        x_train, y_train, validation_split=0.1, epochs=epochs, batch_size=batch_size,
        verbose=0, callbacks=[Progress()],
    )  # fmt: skip
    loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
    metrics = {"accuracy": float(accuracy), "loss": float(loss)}
    save_version(
        model,
        metrics=metrics,
        classes=[str(digit) for digit in range(10)],
        metadata={"dataset": "digits", "model": "cnn", "hyperparameters": {"epochs": epochs}},
    )
    report.succeeded(metrics)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # anything else: the reason the operator shows
        sys.exit(report.failed("InternalError", f"{type(exc).__name__}: {exc}"))
