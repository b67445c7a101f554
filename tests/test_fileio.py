"""Atomic writes' temporaries: a killed process's are removed, a live one's and another
machine's are kept (workers of one batch may share a network folder); a folder written whole or
not at all."""

from __future__ import annotations

import os

import pytest

from sparsekits.fileio import _host_tag, atomic_folder, atomic_path, remove_stale_temporaries

DEAD_PID = 2**22 + 12345  # above Linux's pid_max default: no such process


def test_only_this_machines_dead_temporaries_are_removed(tmp_path):
    with atomic_path(tmp_path / "a.nii.gz") as tmp:  # the name atomic_path gives
        assert tmp.name == f".tmp-{os.getpid()}.{_host_tag()}-a.nii.gz"
        tmp.write_bytes(b"whole")
    dead = tmp_path / f".tmp-{DEAD_PID}.{_host_tag()}-b.nii.gz"
    dead_old_style = tmp_path / f".tmp-{DEAD_PID}-c.nii.gz"  # written before the host tag
    live = tmp_path / f".tmp-{os.getpid()}.{_host_tag()}-d.nii.gz"
    elsewhere = tmp_path / f".tmp-{DEAD_PID}.0123abcd-e.nii.gz"
    for path in (dead, dead_old_style, live, elsewhere):
        path.write_bytes(b"part")

    remove_stale_temporaries(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["a.nii.gz", live.name, elsewhere.name]
    )


def test_a_folder_is_replaced_whole_or_left_as_it_was(tmp_path):
    target = tmp_path / "model"
    with atomic_folder(target) as folder:
        (folder / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "half.txt").write_text("half")
        raise RuntimeError("killed mid-way")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]

    with atomic_folder(target) as folder:
        (folder / "new.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]


def test_a_dead_process_s_temporary_folder_is_removed(tmp_path):
    dead = tmp_path / f".tmp-{DEAD_PID}.{_host_tag()}-model"
    live = tmp_path / f".tmp-{os.getpid()}.{_host_tag()}-other"
    for folder in (dead, live):
        (folder / "fold_0").mkdir(parents=True)
        (folder / "fold_0" / "config.json").write_text("{}")

    remove_stale_temporaries(tmp_path)

    assert [p.name for p in tmp_path.iterdir()] == [live.name]
