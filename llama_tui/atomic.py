"""Crash-safe file writes: a file is either the old bytes or the new bytes, never half.

Every file llama-tui rewrites (exports, config) goes through `atomic_write`: a temp file in
the same directory (so the final rename never crosses a filesystem), written, flushed and
fsynced, then renamed over the target, then the directory fsynced so the rename itself
survives a power cut. On any failure (disk full, permission, Ctrl+C) the temp file is
removed and the target is untouched. Files are 0600 and directories we create 0700:
conversations are private. `make_private_dirs` is the one way llama-tui creates a directory
(config, data, sessions, logs, converted models, save folders).
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700

# Filesystems where hard links are not supported: fall back to check-then-rename there.
_NO_LINK_ERRNOS = {
    errno.EPERM,
    errno.EXDEV,
    errno.EMLINK,
    getattr(errno, "ENOTSUP", errno.EPERM),
    getattr(errno, "EOPNOTSUPP", errno.EPERM),
}


def make_private_dirs(path: Path, *, chmod_existing: bool = False) -> Path:
    """Create `path` and any missing parents with mode 0700; return `path`.

    Unlike `Path.mkdir(parents=True, mode=...)`, every directory we create gets 0700 (not
    only the last). Existing directories keep their mode unless `chmod_existing` (used for
    our own data directories, never for a folder the user chose for an export).
    """
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # created meanwhile by someone else: fine
        with contextlib.suppress(OSError):
            d.chmod(DIR_MODE)  # mkdir's mode is masked by the umask
    if chmod_existing and not missing:
        with contextlib.suppress(OSError):
            path.chmod(DIR_MODE)
    return path


def fsync_dir(directory: Path) -> None:
    """fsync a directory so a rename / create in it is durable. Best effort (not on Windows)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) refuse fsync on directories
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """os.write until every byte is written (a short write is legal, e.g. near disk full)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path | str, data: bytes, *, overwrite: bool) -> Path:
    """Write `data` to `path` atomically, mode 0600; return the path.

    With `overwrite=False` an existing `path` (a file, a directory or a symlink, even a
    dangling one) raises `FileExistsError` naming the path, and the final step is a hard
    link, which fails atomically if another process created the file meanwhile. With
    `overwrite=True` the file is replaced with `os.replace`; a symlink at `path` is replaced
    itself, never written through. The temp file is created with O_EXCL (mkstemp), so a
    symlink planted at the temp name is never followed.
    """
    path = Path(path)
    directory = path.parent
    if not overwrite and os.path.lexists(path):
        raise _exists(path)
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix="." + path.name[:40] + ".", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        try:
            if hasattr(os, "fchmod"):  # not on Windows before 3.13; mkstemp uses 0600 anyway
                with contextlib.suppress(OSError):
                    os.fchmod(fd, FILE_MODE)
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_no_clobber(tmp, path)
        fsync_dir(directory)
    except BaseException:
        # BaseException: Ctrl+C or SystemExit from a signal handler must not leave litter.
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return path


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path))


def _link_no_clobber(tmp: Path, path: Path) -> None:
    """Move `tmp` to `path` only if `path` does not exist, without a race where possible."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise _exists(path) from None
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        # No hard links here (FAT, some network / FUSE filesystems): a small race remains
        # between the check and the rename, which is the best this filesystem allows.
        if os.path.lexists(path):
            raise _exists(path) from None
        os.replace(tmp, path)
        return
    # The target is complete and durable from here; a leftover temp name is only litter.
    with contextlib.suppress(OSError):
        tmp.unlink()
