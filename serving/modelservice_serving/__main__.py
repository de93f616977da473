"""``python -m modelservice_serving {train,serve} [flags]``: the image's two entrypoints."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import ValidationError

from . import logs, settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelservice_serving", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    settings.add_flags(
        commands.add_parser("train", help="train a model version"), settings.TrainSettings
    )
    settings.add_flags(
        commands.add_parser("serve", help="serve a model version over HTTP"), settings.ServeSettings
    )
    return parser


def _validation_summary(error: ValidationError) -> str:
    """pydantic's multi-line report as one line: ``--epochs: Input should be ...``."""
    parts = []
    for item in error.errors():
        flag = "--" + "-".join(str(part).replace("_", "-") for part in item["loc"])
        parts.append(f"{flag}: {item['msg']}")
    return "; ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "train":
        from .train import main as train_main

        logs.configure(os.environ.get("MSO_LOG_LEVEL", "info"))
        try:
            train_settings = settings.from_flags(settings.TrainSettings, args)
        except ValidationError as exc:
            fallback = args.termination_log or os.environ.get(
                "MSO_TERMINATION_LOG", "/dev/termination-log"
            )
            return train_main.fail(Path(fallback), "InvalidSettings", _validation_summary(exc))
        return train_main.run(train_settings)

    try:
        serve_settings = settings.from_flags(settings.ServeSettings, args)
    except ValidationError as exc:
        sys.stderr.write(f"error: InvalidSettings: {_validation_summary(exc)}\n")
        return 2
    logs.configure(serve_settings.log_level)
    from .server import run

    return run(serve_settings)


if __name__ == "__main__":
    sys.exit(main())
