"""Atomic replacement of a directory: build it beside the target, then swap it in.

``renameat2(RENAME_EXCHANGE)`` on Linux; elsewhere rename the old one aside, rename the new
one in, remove the old one, so at every instant the target is the old or the new directory.
Leftovers of a crashed writer are sibling directories named ``.<name>.routeiq-tmp-<pid>-<hex>``
or ``.<name>.routeiq-old-<pid>-<hex>``; :func:`clean_leftovers` removes those whose process
is gone.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import secrets
import shutil
import sys
from pathlib import Path

TMP_TAG, OLD_TAG = "routeiq-tmp", "routeiq-old"


def temp_sibling(dest: Path) -> tuple[Path, str]:
    """A fresh temp directory path beside ``dest`` and the token naming this writer."""
    token = f"{os.getpid()}-{secrets.token_hex(6)}"
    return dest.parent / f".{dest.name}.{TMP_TAG}-{token}", token


def fsync_dir(path: Path) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: Path, dest: Path, token: str) -> None:
    """Put ``tmp`` at ``dest``; at every instant ``dest`` is the old or the new artifact."""
    if not os.path.lexists(dest):
        os.rename(tmp, dest)
    elif _rename_exchange(tmp, dest):
        fsync_dir(dest.parent)
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old artifact
    else:
        # No atomic swap: a crash between the two renames leaves the old artifact complete
        # under the .routeiq-old name (read_artifact points to it).
        old = dest.parent / f".{dest.name}.{OLD_TAG}-{token}"
        os.rename(dest, old)
        try:
            os.rename(tmp, dest)
        except BaseException:
            os.rename(old, dest)
            raise
        fsync_dir(dest.parent)
        shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


def _rename_exchange(src: Path, dst: Path) -> bool:
    """Atomically swap two paths with Linux renameat2; False where unsupported."""
    if sys.platform != "linux":
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if fn(at_fdcwd, os.fsencode(src), at_fdcwd, os.fsencode(dst), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(err, os.strerror(err), str(dst))


def leftovers(dest: Path) -> list[tuple[Path, int]]:
    pattern = re.compile(rf"^\.{re.escape(dest.name)}\.(?:{TMP_TAG}|{OLD_TAG})-(\d+)-[0-9a-f]+$")
    found = []
    if dest.parent.is_dir():
        for entry in os.scandir(dest.parent):
            match = pattern.match(entry.name)
            if match and entry.is_dir(follow_symlinks=False):
                found.append((Path(entry.path), int(match[1])))
    return found


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process on Windows: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(dest: Path) -> None:
    """Remove temp/old directories of earlier writers to ``dest`` that are no longer running."""
    for path, pid in leftovers(dest):
        if pid != os.getpid() and not _pid_alive(pid):
            shutil.rmtree(path, ignore_errors=True)
