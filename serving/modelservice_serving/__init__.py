"""The modelservice serving image: one package, two entrypoints (``train`` and ``serve``).

See ``docs/contracts.md`` for the contract between this image and the operator.
"""

__version__ = "0.1.0"
