"""What the request handlers share: settings, metrics, the model once loaded, readiness."""

from __future__ import annotations

from dataclasses import dataclass, field

from .batching import DynamicBatcher
from .errors import ModelNotFoundError, ModelNotReadyError
from .metrics import ServerMetrics
from .model import ServedModel
from .settings import ServeSettings


@dataclass
class ServingState:
    settings: ServeSettings
    metrics: ServerMetrics
    model: ServedModel | None = None
    batcher: DynamicBatcher | None = None
    draining: bool = False
    load_error: str | None = field(default=None)
    grpc_port: int | None = None  # bound once the gRPC listener has started

    @property
    def ready(self) -> bool:
        """Loaded, warmed up and not shutting down: the readiness probe's answer."""
        return self.batcher is not None and not self.draining

    def loaded_model(self, name: str) -> tuple[ServedModel, DynamicBatcher]:
        """The model addressed by ``name``; in-flight work still runs while draining."""
        if name != self.settings.model_name:
            raise ModelNotFoundError(name)
        if self.model is None or self.batcher is None:
            raise ModelNotReadyError(f"model {name!r} is not loaded yet")
        return self.model, self.batcher
