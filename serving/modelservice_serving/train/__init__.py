"""The ``train`` entrypoint: dataset in, a complete model version directory out."""
