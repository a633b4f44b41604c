"""Files only their owner may read: secrets and the configs that hold them.

They are created with mode 0600 from the first byte (os.open with the mode, not a chmod
after the write, which leaves a moment when they are readable), and replaced whole.
"""

from __future__ import annotations

import os
import pwd
import secrets
from pathlib import Path


def write_private(path: Path, text: str, owner: pwd.struct_passwd | None = None) -> None:
    """Write `text` to `path` (mode 0600, `owner`'s if given, else ours), through a new file
    renamed over the old one."""
    partial = path.with_name(f".{path.name}.partial")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        if owner is not None:
            os.fchown(out.fileno(), owner.pw_uid, owner.pw_gid)
        out.write(text)
    os.replace(partial, path)


def kept_secret(path: Path, nbytes: int = 24) -> str:
    """The secret kept in `path`, made (URL-safe, `nbytes` random bytes) on first use."""
    if not path.exists():
        write_private(path, secrets.token_urlsafe(nbytes))
    return path.read_text().strip()
