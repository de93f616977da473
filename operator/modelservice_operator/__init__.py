"""modelservice-operator: train, gate, promote and serve models from one ModelService.

Importing the package registers the kopf handlers, so ``kopf run -m modelservice_operator``
is the whole operator.
"""

from . import handlers

__all__ = ["handlers"]
