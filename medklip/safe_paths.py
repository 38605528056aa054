"""Paths built from data stay inside their root, and data strings become file names through one function.

Report ids, image columns and header fields come from files other systems export and from what users type into the
Prefect UI. Nothing built from them may reach outside the folder it belongs to:

- `contained(root, relative)`: `root / relative` with symlinks resolved, refused (`UnsafePath`) unless it stays inside
  `root`; absolute paths, drive anchors and `..` that climbs out are refused before the file system is asked whether
  the target exists, so a refusal says nothing about files outside the root.
- `file_name(text)`: any string -> a safe file name, unique per string: a string that is already a plain name
  (letters, digits, `._-`, not starting with a dot, at most 100 characters) is kept; any other gets its unsafe
  characters replaced and `~` plus a hash of the whole string appended. Where a file is listed, list the
  original next to it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class UnsafePath(ValueError):
    """A path from data that would leave its root; `reason` is safe to show (it names nothing outside the root)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def contained(root: str | Path, relative: str) -> Path:
    """`root / relative`, resolved, if it stays inside `root` (symlinks followed); else `UnsafePath`."""
    text = str(relative)
    if "\0" in text:
        raise UnsafePath("path outside the folder: contains a NUL byte")
    if PurePosixPath(text).is_absolute() or PureWindowsPath(text).anchor:
        raise UnsafePath("path outside the folder: absolute paths are not allowed")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise UnsafePath("path outside the folder: it climbs out with '..' or through a link")
    return target


def file_name(text: str) -> str:
    """A file name for `text` that cannot traverse, hide or collide (see the module docstring)."""
    text = str(text)
    if PLAIN_NAME.fullmatch(text):
        return text  # a hashed name has a '~', which no plain name has: the two never collide
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._-")[:60]
    return f"{readable or 'id'}~{digest}"
