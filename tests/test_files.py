"""The one atomic-write helper: unique temporaries, normal permissions, nothing
left behind on failure."""

from __future__ import annotations

import os
import threading

import pytest

from pixguard._files import atomic_file, atomic_folder, atomic_text_file, write_json_atomic


def test_atomic_file_gets_normal_permissions_and_leaves_no_temporary(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {"x": 1})
        with atomic_folder(tmp_path / "folder") as scratch:
            (scratch / "inside.txt").write_text("x")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "folder"]


def test_a_private_file_stays_readable_by_its_owner_only(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_file(tmp_path / "secret.bin", private=True) as temporary:
            temporary.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "secret.bin").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["secret.bin"]


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("previous")

    def crash_mid_write() -> None:
        with atomic_text_file(target) as stream:
            stream.write("half")
            raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        crash_mid_write()
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_concurrent_writers_never_share_a_temporary(tmp_path):
    target = tmp_path / "shared.bin"
    seen: list[str] = []
    barrier = threading.Barrier(4)

    def write(value: bytes) -> None:
        with atomic_file(target) as temporary:
            seen.append(temporary.name)
            temporary.write_bytes(value * 1000)
            barrier.wait()

    threads = [threading.Thread(target=write, args=(bytes([i]),)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(seen)) == 4
    data = target.read_bytes()
    assert len(data) == 1000 and len(set(data)) == 1  # one whole write, not a mix
    assert target.suffix == ".bin" and all(name.endswith(".tmp.bin") for name in seen)


def test_replacing_a_folder_swaps_it_only_when_the_new_one_is_complete(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.txt").write_text("old")

    def fail_the_check() -> None:
        with atomic_folder(target, replace=True) as scratch:
            (scratch / "new.txt").write_text("new")
            raise RuntimeError("failed check")

    with pytest.raises(RuntimeError):
        fail_the_check()
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with atomic_folder(target, replace=True) as scratch:
        (scratch / "new.txt").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
