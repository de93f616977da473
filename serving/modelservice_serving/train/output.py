"""A version directory that appears only when complete.

The model is written into a hidden sibling (``.v3.partial-XXXX``) on the same volume and
renamed into place at the end; rename is atomic, so a reader sees no version or a whole one.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .errors import OutputExistsError, OutputNotWritableError

_VERSION_NAME = re.compile(r"^v?(\d+)$")


def version_from_dir(output: Path) -> int | None:
    """``/models/v3`` is version 3; other names carry no version."""
    match = _VERSION_NAME.match(output.name)
    return int(match.group(1)) if match else None


def highest_version(store: Path) -> int:
    """The highest ``vN`` (or ``N``) directory in the store, 0 when there is none."""
    try:
        names = [entry.name for entry in store.iterdir() if entry.is_dir()]
    except OSError:
        return 0
    return max((int(m.group(1)) for m in map(_VERSION_NAME.match, names) if m), default=0)


class StagedOutput:
    """Reserve a staging directory now (fail before training), publish it at the end."""

    def __init__(self, output: Path) -> None:
        self.output = output
        if output.exists():
            raise OutputExistsError(
                f"output {str(output)!r} already exists; versions are never overwritten",
                highestVersion=highest_version(output.parent),
            )
        try:
            output.parent.mkdir(parents=True, exist_ok=True)
            self.staging = Path(
                tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent)
            )
        except OSError as exc:
            raise OutputNotWritableError(
                f"cannot write to {str(output.parent)!r}: {exc.strerror or exc}"
            ) from exc

    def publish(self) -> None:
        """Atomically renames the finished staging directory to the output name."""
        # Directories are created 0700 by mkdtemp; the server runs as another pod, same UID.
        os.chmod(self.staging, 0o755)
        try:
            os.rename(self.staging, self.output)
        except OSError as exc:
            self.discard()
            if self.output.exists():
                raise OutputExistsError(
                    f"output {str(self.output)!r} appeared while training",
                    highestVersion=highest_version(self.output.parent),
                ) from exc
            raise OutputNotWritableError(f"cannot publish {str(self.output)!r}: {exc}") from exc

    def discard(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)
