"""Pure builders: a ModelService spec in, one child manifest (a plain dict) out."""
