"""Atomic writes: the target is the old bytes or the new bytes, never half, never litter."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

import pytest

from llama_tui import atomic
from llama_tui.atomic import atomic_write, make_private_dirs

OLD = b"old contents\n"


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _fail_writes(monkeypatch: pytest.MonkeyPatch, err: int = errno.ENOSPC) -> None:
    real = os.write

    def write(fd: int, data: bytes) -> int:
        if fd > 2:  # leave stdout / stderr (pytest's capture) alone
            raise OSError(err, os.strerror(err))
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)


@pytest.fixture
def existing(tmp_path: Path) -> Path:
    p = tmp_path / "conv.md"
    p.write_bytes(OLD)
    return p


def test_writes_new_file_private(tmp_path: Path) -> None:
    p = atomic_write(tmp_path / "a.md", b"hello", overwrite=False)
    assert p.read_bytes() == b"hello"
    assert _mode(p) == 0o600
    assert os.listdir(tmp_path) == ["a.md"]


def test_refuses_existing_file_without_overwrite(existing: Path) -> None:
    with pytest.raises(FileExistsError) as info:
        atomic_write(existing, b"new", overwrite=False)
    assert info.value.filename == str(existing)
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]


def test_overwrite_replaces(existing: Path) -> None:
    atomic_write(existing, b"new", overwrite=True)
    assert existing.read_bytes() == b"new"
    assert _mode(existing) == 0o600


@pytest.mark.parametrize("err", [errno.ENOSPC, errno.EIO, errno.EDQUOT])
def test_write_error_keeps_previous_file_and_leaves_no_temp(
    existing: Path, monkeypatch: pytest.MonkeyPatch, err: int
) -> None:
    with monkeypatch.context() as m:
        _fail_writes(m, err)
        with pytest.raises(OSError) as info:
            atomic_write(existing, b"new" * 1000, overwrite=True)
    assert info.value.errno == err
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]
    atomic_write(existing, b"retry", overwrite=True)  # the fault is gone: retry works
    assert existing.read_bytes() == b"retry"


def test_fsync_error_keeps_previous_file(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fsync(fd: int) -> None:
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError):
        atomic_write(existing, b"new", overwrite=True)
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]


def test_permission_error_on_rename(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def replace(src: object, dst: object) -> None:
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        atomic_write(existing, b"new", overwrite=True)
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]


def test_permission_error_creating_temp(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def mkstemp(**kwargs: object) -> tuple[int, str]:
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    with pytest.raises(PermissionError):
        atomic_write(existing, b"new", overwrite=True)
    assert existing.read_bytes() == OLD


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory(existing: Path) -> None:
    existing.parent.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            atomic_write(existing, b"new", overwrite=True)
    finally:
        existing.parent.chmod(0o700)
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]


def test_interrupt_removes_temp(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def write_all(fd: int, data: bytes) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "write_all", write_all)
    with pytest.raises(KeyboardInterrupt):
        atomic_write(existing, b"new", overwrite=True)
    assert os.listdir(existing.parent) == [existing.name]


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real(fd, bytes(data[:7])))
    data = bytes(range(256)) * 10
    p = atomic_write(tmp_path / "x.bin", data, overwrite=False)
    monkeypatch.undo()
    assert p.read_bytes() == data


def test_no_clobber_race_is_detected(existing: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The file appears after the early check (another process): the hard link still refuses.
    monkeypatch.setattr(os.path, "lexists", lambda p: False)
    with pytest.raises(FileExistsError):
        atomic_write(existing, b"new", overwrite=False)
    assert existing.read_bytes() == OLD
    assert os.listdir(existing.parent) == [existing.name]


def test_filesystem_without_hard_links(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def link(src: object, dst: object) -> None:
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", link)
    p = atomic_write(tmp_path / "a.md", b"x", overwrite=False)
    assert p.read_bytes() == b"x"
    with pytest.raises(FileExistsError):
        atomic_write(p, b"y", overwrite=False)
    assert os.listdir(tmp_path) == ["a.md"]


def test_symlink_target_refused_then_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(OLD)
    link = tmp_path / "link.md"
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        atomic_write(link, b"new", overwrite=False)
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        atomic_write(dangling, b"new", overwrite=False)
    assert not (tmp_path / "nowhere").exists()
    atomic_write(link, b"new", overwrite=True)
    assert not link.is_symlink()
    assert link.read_bytes() == b"new"
    assert victim.read_bytes() == OLD


def test_make_private_dirs(tmp_path: Path) -> None:
    deep = tmp_path / "a" / "b" / "c"
    make_private_dirs(deep)
    for d in (tmp_path / "a", tmp_path / "a" / "b", deep):
        assert _mode(d) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    make_private_dirs(shared)
    assert _mode(shared) == 0o755  # a folder the user chose keeps its mode
    make_private_dirs(shared, chmod_existing=True)
    assert _mode(shared) == 0o700
