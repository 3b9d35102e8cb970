"""The power-loss layer itself: what survives a cut is exactly what its crash model says
(tests/faults/powerfs.py): file data only once the file was synced; directory entry changes once
anything was synced after them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .powerloss import PowerLossDisk


def write(path: Path, data: bytes, *, sync: bool = False, flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def test_unsynced_data_is_lost_and_synced_data_kept(power_disk: PowerLossDisk) -> None:
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "kept", b"durable", sync=True)
    write(mnt / "lost", b"volatile")
    with open(mnt / "kept", "r+b") as f:  # overwrite and extend the durable file, no fsync
        f.write(b"CHANGED and longer")
    sync_dir(mnt)  # a directory fsync commits names, never file data
    assert (mnt / "kept").read_bytes() == b"CHANGED and longer"  # the layer reads through

    report = power_disk.cut()

    assert report["pending_files"] == 2
    assert (disk / "kept").read_bytes() == b"durable"
    assert (disk / "lost").read_bytes() == b""  # its name was committed, its data never synced


def test_an_entry_change_needs_a_later_sync(power_disk: PowerLossDisk) -> None:
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "old-name", b"a", sync=True)
    write(mnt / "doomed", b"b", sync=True)
    os.mkdir(mnt / "folder")
    write(mnt / "folder" / "f", b"c", sync=True)  # the fsync commits mkdir and create too
    os.rename(mnt / "old-name", mnt / "renamed")
    os.unlink(mnt / "doomed")
    write(mnt / "never-committed", b"d")
    assert sorted(os.listdir(mnt)) == ["folder", "never-committed", "renamed"]

    power_disk.cut()

    assert sorted(os.listdir(disk)) == ["doomed", "folder", "old-name"]
    assert (disk / "old-name").read_bytes() == b"a"
    assert (disk / "doomed").read_bytes() == b"b"
    assert (disk / "folder" / "f").read_bytes() == b"c"


def test_rename_over_a_file_and_truncate_are_taken_back(power_disk: PowerLossDisk) -> None:
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "target", b"original target", sync=True)
    write(mnt / "shrunk", b"0123456789", sync=True)
    write(mnt / "tmp", b"replacement", sync=True)
    os.rename(mnt / "tmp", mnt / "target")  # replace-by-rename, not committed
    os.truncate(mnt / "shrunk", 3)
    with open(mnt / "shrunk", "ab") as f:
        f.write(b"xyz")

    power_disk.cut()

    assert sorted(os.listdir(disk)) == ["shrunk", "target", "tmp"]
    assert (disk / "target").read_bytes() == b"original target"
    assert (disk / "tmp").read_bytes() == b"replacement"
    assert (disk / "shrunk").read_bytes() == b"0123456789"


def test_committed_rename_and_unlink_stay(power_disk: PowerLossDisk) -> None:
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "a", b"a", sync=True)
    write(mnt / "b", b"b", sync=True)
    os.rename(mnt / "a", mnt / "c")
    os.unlink(mnt / "b")
    sync_dir(mnt)

    power_disk.cut()

    assert os.listdir(disk) == ["c"]
    assert (disk / "c").read_bytes() == b"a"


def test_o_sync_and_o_dsync_writes_are_durable_at_once(power_disk: PowerLossDisk) -> None:
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "osync", b"meta", flags=os.O_SYNC)
    write(mnt / "odsync", b"data", flags=os.O_DSYNC)

    power_disk.cut()

    assert (disk / "osync").read_bytes() == b"meta"
    assert (disk / "odsync").read_bytes() == b"data"


def test_listing_shows_entries_with_their_real_inodes(power_disk: PowerLossDisk) -> None:
    """glibc hides directory entries whose inode is 0; a store that lists its folder at start-up
    (WiredTiger looks for its journal so) would find nothing."""
    mnt, disk = power_disk.mnt, power_disk.disk
    write(mnt / "WiredTigerLog.0000000001", b"journal", sync=True)
    os.mkdir(mnt / "journal")

    seen = {entry.name: entry.inode() for entry in os.scandir(mnt)}
    listed = subprocess.run(["ls", "-a", str(mnt)], capture_output=True, text=True, check=True)

    assert seen == {name: os.lstat(disk / name).st_ino for name in ("WiredTigerLog.0000000001", "journal")}
    assert all(seen.values())
    assert listed.stdout.split() == [".", "..", "WiredTigerLog.0000000001", "journal"]
    assert os.stat(mnt / "journal").st_ino == os.stat(disk / "journal").st_ino


def test_the_layer_counts_entries_no_directory_fsync_covered(power_disk: PowerLossDisk) -> None:
    """What a strict POSIX file system could still lose (the model here keeps them)."""
    mnt = power_disk.mnt
    os.mkdir(mnt / "d")
    write(mnt / "d" / "covered", b"x", sync=True)
    write(mnt / "uncovered", b"y", sync=True)
    sync_dir(mnt / "d")

    stats = power_disk.stats()

    assert stats["unsynced_entries"] == 2  # /d and /uncovered: nobody fsynced /
    assert stats["unsynced_entry_examples"] == ["/d", "/uncovered"]


def test_a_reboot_mounts_the_durable_state(power_disk: PowerLossDisk) -> None:
    mnt = power_disk.mnt
    write(mnt / "kept", b"kept", sync=True)
    write(mnt / "kept", b"KEPT-not-synced")
    power_disk.cut()

    power_disk.mount()

    assert (mnt / "kept").read_bytes() == b"kept"
    write(mnt / "kept", b"again")  # the new boot starts with nothing pending
    assert power_disk.stats()["pending_files"] == 1
