"""The build: version and git revision, for zoom_exporter_build_info and the logs."""

from __future__ import annotations

import functools
import os
from pathlib import Path

from exporter import __version__

UNKNOWN = "unknown"
_REVISION_CHARS = frozenset("0123456789abcdef")


@functools.cache
def revision() -> str:
    """The git commit this code runs from: `EXPORTER_REVISION` (set when an image is built),
    or the checkout's HEAD, or "unknown"."""
    given = os.environ.get("EXPORTER_REVISION", "").strip().lower()
    if given:
        return given[:40] if set(given[:40]) <= _REVISION_CHARS else UNKNOWN
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text(encoding="ascii").strip()
        if head.startswith("ref: "):
            ref = head[5:]
            loose = git / ref
            if loose.is_file():
                head = loose.read_text(encoding="ascii").strip()
            else:
                packed = (git / "packed-refs").read_text(encoding="ascii")
                head = next(
                    (line.split()[0] for line in packed.splitlines() if line.endswith(" " + ref)),
                    "",
                )
    except (OSError, UnicodeDecodeError):
        return UNKNOWN
    return head[:40] if len(head) >= 7 and set(head[:40]) <= _REVISION_CHARS else UNKNOWN


VERSION = __version__
