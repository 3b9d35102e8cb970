"""A FUSE file system that forgets what was not made durable: power-loss fault injection.

Run as its own process (``python powerfs.py DISK ATTIC MOUNTPOINT``, see
:mod:`tests.faults.powerloss` for the side the tests use): it mounts ``MOUNTPOINT`` as a
pass-through view of the directory ``DISK`` and keeps, in memory, what it needs to take back every
change not yet made durable. The command ``cut`` on its standard input is the power failure: it
puts ``DISK`` back into its durable state and answers with what it took back; the tests then
unmount, and "reboot" by mounting ``DISK`` again (or reading it directly). Every change is written
through to ``DISK`` at once, so reads need no bookkeeping; what the layer keeps is an undo record.

The crash model (what survives the cut)
---------------------------------------
It is the model of a journaling file system such as ext4 in its default ``data=ordered`` mode,
taken at its most pessimistic (the cut comes at the worst moment; no background flush ever ran):

* **File data** (writes, and the file size: ``truncate``/``ftruncate``, ``O_TRUNC``, appends) is
  durable only once that file was synced: ``fsync`` or ``fdatasync`` of any descriptor of the
  file, or each ``write`` on a descriptor opened with ``O_SYNC`` or ``O_DSYNC``. A cut puts every
  other file back to its content and size at its last sync (a file never synced: empty).
* **Directory entries** (create, mkdir, symlink, link, unlink, rmdir, rename) form one ordered
  journal. Any sync (``fsync``/``fdatasync`` of any file, ``fsync`` of any directory, an
  ``O_SYNC`` write) commits the whole journal so far, like ext4's journal commit, which carries
  every earlier metadata change with it. A cut takes back, newest first, the entry changes made
  since the last commit. So a file created and then fsynced keeps its name even though no program
  fsynced its directory; a rename is durable once anything was synced after it.
* Permissions, owners and times are not modelled (kept as they are).

Why this model: it is what the Linux file systems our users run on (ext4, XFS) do in practice,
and it is the model under which nats-server's ``sync_interval: always`` is meant to be safe.
Strict POSIX promises less: a new directory entry is durable only after an ``fsync`` of its
directory. nats-server 2.15 fsyncs a stream's folder only after renaming its metadata files into
it; it never fsyncs ``msgs/`` after creating a message block, nor the parents of a new stream's
folder, so under strict POSIX even ``always`` could lose a new block or a new stream. This layer
does not simulate that, but it counts the entry changes that no directory
fsync covered (``unsynced_entries`` in the answer to ``cut`` and ``stats``), so a test can report
what a strict file system would risk.

Not modelled: torn writes within a page, reordering of one file's unsynced writes (a cut drops
them all), ``fallocate`` (not offered: programs fall back to ``ftruncate``), rename flags
(``RENAME_NOREPLACE``/``RENAME_EXCHANGE``: the binding drops them), and mmap'd writes reaching the
layer after the cut (the programs are killed first; neither nats-server nor WiredTiger writes
through mmap).

Directory entries carry the real inode numbers of ``DISK`` (``use_ino``): glibc hides entries
whose inode is 0, and a store that lists its directory at start-up (WiredTiger finds its journal
that way) would then find nothing.

Protocol on standard input, one command a line, one JSON line back on standard output:
``stats`` (counters), ``cut`` (take back everything not durable, then refuse every operation with
EIO until unmounted). When standard input closes (the test process died), the layer unmounts
itself lazily.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import mfusepy as fuse

PAGE = 4096
_STRIP = os.O_APPEND | os.O_SYNC | os.O_DSYNC | getattr(os, "O_DIRECT", 0)  # the kernel resolved these


@dataclass
class Pending:
    """A file with changes since its last sync: how to take them back."""

    fd: int  # our own descriptor of the inode (works after a rename or unlink)
    durable_size: int
    pages: dict[int, bytes] = field(default_factory=dict)  # page index -> durable content


class PowerLossFS(fuse.Operations):  # type: ignore[misc]
    use_ns = True

    def __init__(self, disk: str, attic: str) -> None:
        self.disk = os.path.realpath(disk)
        self.attic = os.path.realpath(attic)  # unlinked entries wait here until committed
        self._mutex = threading.RLock()
        self.pending: dict[tuple[int, int], Pending] = {}
        self.journal: list[tuple[str, ...]] = []  # undo actions of uncommitted entry changes
        self.sync_fds: set[int] = set()  # descriptors opened O_SYNC / O_DSYNC
        self.unsynced_entries: set[str] = set()  # entry changes no directory fsync covered
        self.counts: Counter[str] = Counter()
        self.synced_names: Counter[str] = Counter()  # syncs per file name pattern
        self.dead = False

    # -- bookkeeping ---------------------------------------------------------------------------

    def _path(self, path: str) -> str:
        return os.path.join(self.disk, path.lstrip("/"))

    def _alive(self) -> None:
        if self.dead:
            raise fuse.FuseOSError(errno.EIO)

    def _before_change(self, fd: int, start: int, end: int) -> None:
        """Save the durable content of ``[start, end)`` before it is overwritten or cut off."""
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino)
        record = self.pending.get(key)
        if record is None:
            record = Pending(os.open(f"/proc/self/fd/{fd}", os.O_RDWR), st.st_size)
            self.pending[key] = record
        end = min(end, record.durable_size)
        for page in range(start // PAGE, -(-end // PAGE)):
            if page not in record.pages:
                record.pages[page] = os.pread(record.fd, PAGE, page * PAGE)

    def _entry_changed(self, path: str) -> None:
        self.unsynced_entries.add(path)

    def _synced(self, fd: int, path: str | None) -> None:
        """``fd``'s file is durable now, and so is every entry change so far (a journal commit)."""
        st = os.fstat(fd)
        record = self.pending.pop((st.st_dev, st.st_ino), None)
        if record is not None:
            os.close(record.fd)
        name = os.path.basename(path) if path else "(unlinked)"
        self.synced_names[re.sub(r"\d+", "N", name)] += 1
        self._commit()

    def _commit(self) -> None:
        self.counts["commits"] += 1
        for action in self.journal:
            if action[0] == "restore":  # an unlink or a replaced entry, now for good
                gone = os.path.join(self.attic, action[1])
                if os.path.isdir(gone) and not os.path.islink(gone):
                    shutil.rmtree(gone)
                else:
                    os.unlink(gone)
        self.journal.clear()
        for key, record in list(self.pending.items()):
            if os.fstat(record.fd).st_nlink == 0:  # deleted for good: nothing to take back
                os.close(record.fd)
                del self.pending[key]

    def _to_attic(self, path: str) -> None:
        name = uuid.uuid4().hex
        os.rename(self._path(path), os.path.join(self.attic, name))
        self.journal.append(("restore", name, path))

    # -- the power failure ---------------------------------------------------------------------

    def cut(self) -> dict[str, Any]:
        with self._mutex:
            report = self.stats()
            self.dead = True
            for record in self.pending.values():
                for page, content in record.pages.items():
                    os.pwrite(record.fd, content, page * PAGE)
                os.ftruncate(record.fd, record.durable_size)
                os.close(record.fd)
            self.pending.clear()
            for action in reversed(self.journal):
                match action:
                    case ("remove", path):
                        target = self._path(path)
                        if os.path.isdir(target) and not os.path.islink(target):
                            os.rmdir(target)
                        else:
                            os.unlink(target)
                    case ("restore", name, path):
                        os.rename(os.path.join(self.attic, name), self._path(path))
                    case ("rename", new, old):
                        os.rename(self._path(new), self._path(old))
            self.journal.clear()
            return report

    def stats(self) -> dict[str, Any]:
        with self._mutex:
            return {
                **self.counts,
                "pending_files": len(self.pending),
                "pending_bytes": sum(len(c) for r in self.pending.values() for c in r.pages.values())
                + sum(max(0, os.fstat(r.fd).st_size - r.durable_size) for r in self.pending.values()),
                "uncommitted_entries": len(self.journal),
                "unsynced_entries": len(self.unsynced_entries),
                "unsynced_entry_examples": sorted(self.unsynced_entries)[:8],
                "synced_names": dict(self.synced_names.most_common(12)),
            }

    # -- reading -------------------------------------------------------------------------------

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        self._alive()
        st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        attrs: dict[str, Any] = {k: getattr(st, k) for k in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def opendir(self, path: str) -> int:
        self._alive()
        return 0

    def releasedir(self, path: str, fh: int) -> int:
        return 0

    def readdir(self, path: str, fh: int) -> list[Any]:
        self._alive()
        base = self._path(path)
        entries: list[Any] = [
            (".", {"st_ino": os.lstat(base).st_ino, "st_mode": 0o40755}, 0),
            ("..", {"st_mode": 0o40755, "st_ino": 1}, 0),
        ]
        with os.scandir(base) as found:
            for entry in found:
                st = entry.stat(follow_symlinks=False)
                entries.append((entry.name, {"st_ino": st.st_ino, "st_mode": st.st_mode}, 0))
        return entries

    def readlink(self, path: str) -> str:
        self._alive()
        return os.readlink(self._path(path))

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        self._alive()
        return os.pread(fh, size, offset)

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.disk)
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files")
        return {k: getattr(st, k) for k in (*keys, "f_flag", "f_frsize", "f_namemax")}

    # -- files -----------------------------------------------------------------------------------

    def _opened(self, fd: int, flags: int) -> int:
        if flags & os.O_DSYNC:  # O_SYNC includes O_DSYNC
            self.sync_fds.add(fd)
        return fd

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            self._alive()
            fd = os.open(self._path(path), flags & ~(_STRIP | os.O_TRUNC | os.O_CREAT))
            if flags & os.O_TRUNC:
                self._truncate_fd(fd, 0)
            return self._opened(fd, flags)

    def create(self, path: str, mode: int, flags: int) -> int:
        with self._mutex:
            self._alive()
            target = self._path(path)
            existed = os.path.lexists(target)
            fd = os.open(target, (flags | os.O_CREAT) & ~(_STRIP | os.O_TRUNC), mode)
            if not existed:
                self.journal.append(("remove", path))
                self._entry_changed(path)
            elif flags & os.O_TRUNC:
                self._truncate_fd(fd, 0)
            return self._opened(fd, flags)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            self._alive()
            self._before_change(fh, offset, offset + len(data))
            written = os.pwrite(fh, data, offset)
            self.counts["writes"] += 1
            self.counts["written_bytes"] += written
            if fh in self.sync_fds:
                self.counts["o_sync_writes"] += 1
                self._synced(fh, path)
            return written

    def _truncate_fd(self, fd: int, length: int) -> None:
        self._before_change(fd, length, os.fstat(fd).st_size)
        os.ftruncate(fd, length)

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._mutex:
            self._alive()
            if fh is not None:
                self._truncate_fd(fh, length)
                return 0
            fd = os.open(self._path(path), os.O_WRONLY)
            try:
                self._truncate_fd(fd, length)
            finally:
                os.close(fd)
            return 0

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._alive()
            self.counts["fdatasyncs" if datasync else "fsyncs"] += 1
            self._synced(fh, path)
            return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._alive()
            self.counts["dir_fsyncs"] += 1
            prefix = path.rstrip("/") + "/"
            self.unsynced_entries = {
                p for p in self.unsynced_entries if os.path.dirname(p).rstrip("/") + "/" != prefix
            }
            self._commit()
            return 0

    def flush(self, path: str, fh: int) -> int:
        return 0

    def release(self, path: str, fh: int) -> int:
        with self._mutex:
            self.sync_fds.discard(fh)
            os.close(fh)
            return 0

    def chmod(self, path: str, mode: int) -> int:
        self._alive()
        os.chmod(self._path(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        self._alive()
        os.chown(self._path(path), uid, gid, follow_symlinks=False)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        self._alive()
        if times is None:
            os.utime(self._path(path), follow_symlinks=False)
        else:
            os.utime(self._path(path), ns=times, follow_symlinks=False)
        return 0

    # -- directory entries -----------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        with self._mutex:
            self._alive()
            os.mkdir(self._path(path), mode)
            self.journal.append(("remove", path))
            self._entry_changed(path)
            return 0

    def symlink(self, target: str, source: str) -> int:
        with self._mutex:
            self._alive()
            os.symlink(source, self._path(target))
            self.journal.append(("remove", target))
            self._entry_changed(target)
            return 0

    def link(self, target: str, source: str) -> int:
        with self._mutex:
            self._alive()
            os.link(self._path(source), self._path(target))
            self.journal.append(("remove", target))
            self._entry_changed(target)
            return 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            self._alive()
            if os.path.isdir(self._path(path)) and not os.path.islink(self._path(path)):
                raise fuse.FuseOSError(errno.EISDIR)
            self._to_attic(path)
            self._entry_changed(path)
            return 0

    def rmdir(self, path: str) -> int:
        with self._mutex:
            self._alive()
            target = self._path(path)
            if not os.path.isdir(target) or os.path.islink(target):
                raise fuse.FuseOSError(errno.ENOTDIR)
            if os.listdir(target):
                raise fuse.FuseOSError(errno.ENOTEMPTY)
            self._to_attic(path)
            self._entry_changed(path)
            return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            self._alive()
            source, target = self._path(old), self._path(new)
            source_is_dir = os.path.isdir(source) and not os.path.islink(source)
            if source_is_dir and (new + "/").startswith(old.rstrip("/") + "/"):
                raise fuse.FuseOSError(errno.EINVAL)
            if os.path.lexists(target):
                if os.path.samefile(source, target):
                    return 0
                target_is_dir = os.path.isdir(target) and not os.path.islink(target)
                if source_is_dir != target_is_dir:
                    raise fuse.FuseOSError(errno.ENOTDIR if source_is_dir else errno.EISDIR)
                if target_is_dir and os.listdir(target):
                    raise fuse.FuseOSError(errno.ENOTEMPTY)
                self._to_attic(new)
            os.rename(source, target)
            self.journal.append(("rename", new, old))
            self._entry_changed(old)
            self._entry_changed(new)
            return 0


def _control(fs: PowerLossFS, mountpoint: str) -> None:
    """Answer commands on standard input; unmount when it closes."""
    for line in sys.stdin:
        command = line.strip()
        if command == "stats":
            answer = fs.stats()
        elif command == "cut":
            answer = fs.cut()
        else:
            answer = {"error": f"unknown command {command!r}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False)


def main() -> None:
    disk, attic, mountpoint = sys.argv[1:4]
    os.makedirs(attic, exist_ok=True)
    fs = PowerLossFS(disk, attic)
    threading.Thread(target=_control, args=(fs, mountpoint), daemon=True).start()
    fuse.FUSE(
        fs,
        mountpoint,
        foreground=True,
        fsname="powerfs",
        use_ino=True,  # real inode numbers in getattr and readdir
        hard_remove=True,  # unlink an open file at once (no .fuse_hidden files)
    )


if __name__ == "__main__":
    main()
