"""Trim a copy of KEDA's module to the scalers the local cluster uses, before building it.

KEDA links every scaler it has (about 70, each with its cloud SDK: AWS, Azure, GCP,
Elasticsearch's typed API of some 960 packages...) into both binaries: 3,700 packages,
over an hour to compile cold on two shared cores. The local cluster needs one scaler
(``metrics-api``, which the operator's ScaledObjects use) and a few small ones a developer
may try (``cpu``, ``memory``, ``prometheus``, ``cron``, ``kubernetes-workload``,
``external``). This removes the other scalers' files from ``pkg/scalers`` and their cases
from the trigger switch in ``pkg/scaling/scalers_builder.go`` (between KEDA's own
``TRIGGERS-START`` and ``TRIGGERS-END`` markers), which leaves about 2,000 packages.
A trigger of a removed type is refused by KEDA as an unknown type ("no scaler found").

    python3 keda_lean.py MODULE_COPY SCALER_FILE_STEM...

Only the standard library is used (build-binaries.sh runs it before any venv exists).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

SCALERS = "pkg/scalers"
BUILDER = "pkg/scaling/scalers_builder.go"
START, END = "// TRIGGERS-START", "// TRIGGERS-END"
# Shared by every scaler but defined upstream in one we remove (azure_queue_scaler.go).
SHARED = {"externalMetricType": 'const externalMetricType = "External"'}


def removed_files(names: list[str], keep: set[str]) -> list[str]:
    """The ``*_scaler.go`` files (and their tests) whose scaler is not kept."""
    removed: list[str] = []
    for name in names:
        stem = name.removesuffix(".go").removesuffix("_test")
        stem = re.sub(r"_integration$", "", stem)
        if stem.endswith("_scaler") and stem.removesuffix("_scaler") not in keep:
            removed.append(name)
    return sorted(removed)


def constructors(sources: list[str]) -> set[str]:
    """The ``New...`` functions the remaining scaler files define."""
    return {m.group(1) for s in sources for m in re.finditer(r"^func (New\w+)\(", s, re.M)}


def trim_switch(builder: str, defined: set[str]) -> str:
    """The builder with only the trigger cases whose constructor still exists."""
    start, end = builder.index(START), builder.index(END)
    head, *cases = re.split(r"\n\t(?=case |default:)", builder[start:end])
    kept: list[str] = []
    for case in cases:
        call = re.search(r"scalers\.(New\w+)\(", case)
        if case.startswith("default:") or (call and call.group(1) in defined):
            # Comments at a case's end belonged to the next case, which may be gone.
            kept.append(re.sub(r"\n\t// [^\n]*$", "", case.rstrip()))
    if not any(c.startswith("default:") for c in kept):
        raise ValueError("the trigger switch has no default case: KEDA's layout changed")
    return builder[:start] + head + "\n\t" + "\n\t".join(kept) + "\n\t" + builder[end:]


def shared_definitions(sources: list[str]) -> str:
    """Go source defining the shared names the kept files use but no kept file defines."""
    text = "\n".join(sources)
    missing = [
        decl
        for name, decl in SHARED.items()
        if re.search(rf"\b{name}\b", text) and not re.search(rf"^\s*{name}\s*=", text, re.M)
    ]
    return "package scalers\n\n" + "\n".join(missing) + "\n" if missing else ""


def trim(module: Path, keep: set[str]) -> list[str]:
    """Trim the module copy in place; return the removed file names."""
    folder = module / SCALERS
    removed = removed_files(sorted(p.name for p in folder.glob("*.go")), keep)
    for name in removed:
        (folder / name).unlink()
    files = sorted(folder.glob("*.go"))
    sources = [p.read_text() for p in files if not p.name.endswith("_test.go")]
    builder = module / BUILDER
    builder.write_text(trim_switch(builder.read_text(), constructors(sources)))
    extra = shared_definitions(sources)
    if extra:
        (folder / "lean_build.go").write_text(extra)
    return removed


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    module, keep = Path(sys.argv[1]), set(sys.argv[2:])
    removed = trim(module, keep)
    print(f"[keda_lean] removed {len(removed)} scaler files; kept {sorted(keep)}", file=sys.stderr)


if __name__ == "__main__":
    main()
