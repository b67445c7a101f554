"""Atomic file output: a killed process never leaves a half-written result behind, and a failed
command leaves no empty folder.

Every output is written to ``.tmp-<pid>.<host>-<name>`` beside it, then renamed over it. A
process killed mid-write leaves only such a temporary; ``remove_stale_temporaries`` deletes
those of this machine whose process is gone (the pid says which; a live process's are kept, so
two runs on one machine can share a folder). ``<host>`` is a hash of the machine's name: a pid
means nothing on another machine, and workers of one batch on several machines
(``predict --num-parts``) may share a network folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from sparsekits.errors import InputError

# The temporaries atomic_path names: the pid of the process that writes them, its machine (absent
# in those of older versions, which were this machine's), then the name.
_TEMPORARY = re.compile(r"^\.tmp-(\d+)(?:\.([0-9a-f]{8}))?-")


def _host_tag() -> str:
    """This machine, as 8 hex digits (a host name may hold characters a file name should not)."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffixes); rename it over ``path`` on success.

    The temporary name keeps the final name's suffixes so that writers that infer the format from
    the extension (nibabel's ``.nii.gz``, numpy's ``.npz``) behave the same. A failed write
    (a full disk, a parent that is a file) raises an OSError that names ``path``, not the
    temporary.
    """
    path = Path(path)
    tmp = _temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        os.replace(tmp, path)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path`` (a folder
    already there is replaced), on failure it is removed: ``path`` is the old folder or the whole
    new one, never a half-filled one (an installed model).

    A folder cannot be renamed over a non-empty one, so the old folder is first renamed aside:
    for that instant ``path`` is absent, never partial. A failed write raises an OSError that
    names ``path``.
    """
    path = Path(path)
    tmp, old = _temporary(path), _temporary(path, "old-")
    try:
        tmp.mkdir(parents=True)
        yield tmp
        if path.exists():
            os.replace(path, old)
        try:
            os.replace(tmp, path)
        except OSError:
            if old.exists():  # put the old folder back
                os.replace(old, path)
            raise
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        for leftover in (tmp, old):
            shutil.rmtree(leftover, ignore_errors=True)


def _temporary(path: Path, tag: str = "") -> Path:
    """The temporary that stands for ``path`` while it is written (``remove_stale_temporaries``
    reads the pid and machine back from its name)."""
    return path.with_name(f".tmp-{os.getpid()}.{_host_tag()}-{tag}{path.name}")


def is_temporary(path: Path) -> bool:
    """Whether ``path`` is one of the temporaries above (a listing of outputs skips them)."""
    return _TEMPORARY.match(path.name) is not None


@contextlib.contextmanager
def all_or_none() -> Iterator[list[Path]]:
    """Collect the paths a block writes; if the block fails, remove them all again, so that a
    case's outputs (a label map and its report) are all there or none is."""
    written: list[Path] = []
    try:
        yield written
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | Path, data) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def remove_stale_temporaries(folder: Path) -> None:
    """Delete the temporaries (files, and ``atomic_folder``'s folders) that killed processes of
    this machine left in ``folder`` (another machine's are left alone: whether their process
    lives cannot be told from here)."""
    if not folder.is_dir():
        return
    host = _host_tag()
    for entry in folder.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or entry.is_symlink() or match.group(2) not in (None, host):
            continue
        if _process_exists(int(match.group(1))):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        elif entry.is_file():
            entry.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


def check_folder_creatable(folder: Path) -> None:
    """Refuse (InputError) a folder that cannot exist because it, or a folder above it, is a file:
    before any work, not after it (permissions are not checked: root ignores them)."""
    for ancestor in (folder, *folder.parents):
        if ancestor.exists():
            if not ancestor.is_dir():
                raise InputError(folder, f"cannot be a folder: {ancestor} is a file")
            return


def outermost_missing(path: Path) -> Path | None:
    """The outermost of ``path`` and its parents that does not exist (None if ``path`` exists):
    what writing ``path`` would create."""
    missing = None
    for ancestor in (path, *path.parents):
        if ancestor.exists():
            break
        missing = ancestor
    return missing


def remove_empty_folders(roots: Iterable[Path]) -> None:
    """Remove each root folder and the folders under it that hold no file, deepest first."""
    for root in roots:
        if not root.is_dir():
            continue
        folders = [root, *(p for p in root.rglob("*") if p.is_dir())]
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: it holds output
                folder.rmdir()
