"""kopf's bookkeeping for an operator without change-detecting handlers: none at all.

kopf keeps a "diff base" (the last handled essence of each object) for its create, update,
resume and field handlers. This operator has none of those: ModelServices reach the work
queue through plain event handlers and the reconcile is level-based (handlers.py). Yet kopf
builds the essence of every watch event anyway, a deep copy of the whole body (twice, with
the progress storage's clean-up), to compute a diff nobody reads: about a tenth of the
operator's CPU during a burst of new ModelServices (py-spy, tests/benchmarks/operator.md).

:class:`NoDiffBase` tells kopf that the essence is empty and there is no stored one, so
nothing is copied or written. :func:`assert_no_change_handlers` keeps that true: a change
handler added later would silently never see a change, so the operator refuses to start.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kopf

__all__ = ["NoDiffBase", "assert_no_change_handlers"]


class NoDiffBase(kopf.DiffBaseStorage):
    """A diff-base storage that keeps nothing and copies nothing."""

    def build(
        self, *, body: kopf.Body, extra_fields: Iterable[Any] | None = None
    ) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return None

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        return None


def assert_no_change_handlers(registry: kopf.OperatorRegistry) -> None:
    """Fail when a create/update/resume/delete/field handler is registered (they need the
    diff base :class:`NoDiffBase` does not keep)."""
    # kopf has no public listing of its handlers by kind; its registry's is the one place.
    handlers = registry._changing.get_all_handlers()
    if handlers:
        names = ", ".join(sorted(str(handler.id) for handler in handlers))
        raise RuntimeError(f"change-detecting kopf handlers need a diff base: {names}")
