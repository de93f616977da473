"""``python -m modelservice_operator``: run kopf with the namespaces from the settings."""

from __future__ import annotations

import kopf

from . import handlers  # noqa: F401  (registers the handlers)
from .settings import get_settings


def main() -> None:
    """Run the operator until it is stopped."""
    namespaces = get_settings().namespace_list
    kopf.run(clusterwide=not namespaces, namespaces=namespaces)


if __name__ == "__main__":
    main()
