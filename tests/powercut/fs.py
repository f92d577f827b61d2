"""A FUSE file system that loses power: the test disk of crates/cli/tests/powercut.rs.

Usage: /usr/bin/python3 fs.py BACKING MOUNTPOINT

Mounts MOUNTPOINT in the foreground and passes every operation through to the directory BACKING, while
keeping a shadow of what a strict POSIX file system would have made durable:

- a file's data is durable as it was at the last fsync/fdatasync of that file (before any: empty);
- a directory's entries (name -> inode) are durable as they were at the last fsync of that directory
  (a directory made since then has no durable entries). Creating, linking, renaming or unlinking a
  name changes nothing durable until its directory is fsynced; a hard link is durable once the
  directory holding it is fsynced.

Nothing else makes anything durable: the kernel does not pass syncfs(2)/sync(2) to a FUSE server, and
close, flush and unmount are no barrier either. Metadata other than names and data (mode, times) is not
modelled: it is kept as last seen.

Unmounting (`fusermount3 -u MOUNTPOINT`, or SIGTERM) is the power cut: once the kernel lets go,
BACKING is rebuilt to exactly the durable state (files whose name is durable but whose data never was
come back empty; names whose directory was not fsynced since they changed come back as they were at
that fsync), and the process exits 0. The next mount starts from that state, all of it durable.

A cut at a precise moment, while the server keeps running: the FREEZE. From the moment of the freeze
on, nothing more becomes durable (the power went off then; what the server does afterwards happens on a
disk that is already dark): every later fsync/fdatasync of a file and every later fsync of a directory
fails with EIO and changes nothing durable, so no acknowledgement can rest on it. The later unmount then
rebuilds to the state frozen at that moment. A freeze is asked for through extended attributes of the
mount's root directory (synchronous, and invisible to directory listings):

- `setxattr MOUNT user.powercut.freeze "now"`: freeze at once;
- `setxattr MOUNT user.powercut.freeze "after N REGEX"`: freeze right after the Nth successful
  fsync/fdatasync of a file whose path (from the mount's root, e.g. `/journal/0000000000000001.jnl`)
  matches the Python regular expression REGEX (re.search), counting from this request;
- `getxattr MOUNT user.powercut.state`: `running`, `armed LEFT REGEX` or `frozen AFTER refused=R`
  (AFTER: the sync the freeze followed, R: syncs refused since).

Prints "powercut-fs: mounted" on stdout once the kernel has initialised the mount, "powercut-fs: frozen
..." when a freeze happens, and a summary of the cut on stderr. Single-threaded (FUSE -s), so the shadow
needs no locking.
"""

import errno
import os
import re
import stat
import sys

from fusepy import FUSE, FuseOSError, Operations

ROOT_ID = 0

DIR, FILE, LINK, OTHER = "dir", "file", "symlink", "other"

# The control attributes of the mount's root directory (see the module doc).
CONTROL_FREEZE = "user.powercut.freeze"
CONTROL_STATE = "user.powercut.state"


def kind_of(mode):
    if stat.S_ISDIR(mode):
        return DIR
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISLNK(mode):
        return LINK
    return OTHER


class PowerCutFS(Operations):
    """Passthrough to `backing` with a durable shadow. Objects are named by our own ids, not by the
    backing inode numbers, because the backing file system reuses a freed inode number for the next
    file it creates: every create gives the new inode a fresh id."""

    use_ns = True

    def __init__(self, backing):
        self.root = os.path.realpath(backing)
        self.next_id = ROOT_ID + 1
        self.id_of_ino = {}
        self.kind = {}
        # Durable state: entries per directory id, data per file id, target per symlink id.
        self.durable_entries = {}
        self.durable_data = {}
        self.symlink_target = {}
        # Mode and mtime (ns), kept as last seen (not modelled).
        self.meta = {}
        self.stats = {"fsync": 0, "fsyncdir": 0, "untracked": 0, "refused": 0}
        # The freeze: None (running), or ("armed", syncs left, compiled regex), or ("frozen", what).
        self.freeze = None
        self._scan()

    # ---- the shadow ----

    def _scan(self):
        """Everything in the backing directory at mount time is durable (it is what the last cut left,
        or what the test prepared before the first mount)."""
        st = os.lstat(self.root)
        self.id_of_ino[st.st_ino] = ROOT_ID
        self.kind[ROOT_ID] = DIR
        self.meta[ROOT_ID] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        stack = [(self.root, ROOT_ID)]
        while stack:
            path, dir_id = stack.pop()
            entries = {}
            for name in os.listdir(path):
                p = os.path.join(path, name)
                st = os.lstat(p)
                if st.st_ino in self.id_of_ino:
                    # Another hard link to a file already read: the same object.
                    entries[name] = self.id_of_ino[st.st_ino]
                    continue
                oid = self._track(st)
                entries[name] = oid
                k = self.kind[oid]
                if k == DIR:
                    stack.append((p, oid))
                elif k == FILE:
                    with open(p, "rb") as f:
                        self.durable_data[oid] = f.read()
                elif k == LINK:
                    self.symlink_target[oid] = os.readlink(p)
            self.durable_entries[dir_id] = entries

    def _track(self, st):
        """A fresh id for the inode `st` describes (just created, or first seen at mount)."""
        oid = self.next_id
        self.next_id += 1
        self.id_of_ino[st.st_ino] = oid
        self.kind[oid] = kind_of(st.st_mode)
        self.meta[oid] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns)
        return oid

    def _created(self, path):
        st = os.lstat(path)
        oid = self._track(st)
        if self.kind[oid] == DIR:
            self.durable_entries[oid] = {}
        elif self.kind[oid] == LINK:
            self.symlink_target[oid] = os.readlink(path)
        return oid

    def _id(self, st):
        oid = self.id_of_ino.get(st.st_ino)
        if oid is None:
            # Cannot happen when every change goes through this mount; count it so the cut reports it.
            self.stats["untracked"] += 1
            oid = self._track(st)
            if self.kind[oid] == DIR:
                self.durable_entries[oid] = {}
        return oid

    # ---- the freeze ----

    def _is_frozen(self):
        return self.freeze is not None and self.freeze[0] == "frozen"

    def _refuse_if_frozen(self):
        """After the freeze a sync reaches a dark disk: it fails, and nothing becomes durable."""
        if self._is_frozen():
            self.stats["refused"] += 1
            raise FuseOSError(errno.EIO)

    def _freeze_now(self, what):
        self.freeze = ("frozen", what)
        print(f"powercut-fs: frozen {what}", flush=True)

    def _count_sync(self, path):
        """A file sync just became durable: freezes here if it is the one the armed trigger waits for."""
        if self.freeze is None or self.freeze[0] != "armed":
            return
        _, left, pattern = self.freeze
        if not pattern.search(path or ""):
            return
        if left > 1:
            self.freeze = ("armed", left - 1, pattern)
        else:
            self._freeze_now(f"after {path}")

    def _handle_control(self, value):
        """`now` or `after N REGEX` (see the module doc)."""
        words = value.decode("utf-8", "replace").split(" ", 2)
        if words == ["now"]:
            if not self._is_frozen():
                self._freeze_now("on request")
            return
        if len(words) == 3 and words[0] == "after" and words[1].isdigit() and int(words[1]) > 0:
            if self._is_frozen():
                raise FuseOSError(errno.EBUSY)
            try:
                pattern = re.compile(words[2])
            except re.error:
                raise FuseOSError(errno.EINVAL)
            self.freeze = ("armed", int(words[1]), pattern)
            return
        raise FuseOSError(errno.EINVAL)

    def _state(self):
        if self.freeze is None:
            return "running"
        if self.freeze[0] == "armed":
            return f"armed {self.freeze[1]} {self.freeze[2].pattern}"
        return f"frozen {self.freeze[1]} refused={self.stats['refused']}"

    def setxattr(self, path, name, value, options, position=0):
        if path == "/" and name == CONTROL_FREEZE:
            self._handle_control(value)
            return 0
        raise FuseOSError(errno.ENOTSUP)

    def getxattr(self, path, name, position=0):
        if path == "/" and name == CONTROL_STATE:
            return self._state().encode()
        raise FuseOSError(errno.ENOTSUP)

    # ---- the power cut ----

    def cut(self):
        """Rebuilds the backing directory to the durable state. Returns a summary."""
        staging = self.root + ".powercut-staging"
        if os.path.lexists(staging):
            _remove_tree(staging)
        os.mkdir(staging)
        made = {}
        counts = {"dirs": 0, "files": 0, "links": 0, "empty": 0}
        self._build(ROOT_ID, staging, made, counts, {ROOT_ID})
        for name in os.listdir(self.root):
            _remove_tree(os.path.join(self.root, name))
        for name in os.listdir(staging):
            os.rename(os.path.join(staging, name), os.path.join(self.root, name))
        os.rmdir(staging)
        return counts

    def _build(self, dir_id, path, made, counts, on_path):
        for name, oid in sorted(self.durable_entries.get(dir_id, {}).items()):
            p = os.path.join(path, name)
            k = self.kind[oid]
            mode, mtime = self.meta.get(oid, (0o600, None))
            if k == DIR:
                if oid in on_path or oid in made:
                    # A directory durable in two places (a rename whose both sides were synced at
                    # different times): fsck would keep one; so do we.
                    continue
                made[oid] = p
                os.mkdir(p, 0o700)
                self._build(oid, p, made, counts, on_path | {oid})
                os.chmod(p, mode)
                counts["dirs"] += 1
            elif k == FILE:
                if oid in made:
                    os.link(made[oid], p)
                    counts["links"] += 1
                    continue
                data = self.durable_data.get(oid, b"")
                if oid not in self.durable_data:
                    counts["empty"] += 1
                with open(p, "wb") as f:
                    f.write(data)
                os.chmod(p, mode)
                made[oid] = p
                counts["files"] += 1
            elif k == LINK:
                os.symlink(self.symlink_target[oid], p)
                continue
            else:
                continue
            if mtime is not None:
                os.utime(p, ns=(mtime, mtime), follow_symlinks=False)

    # ---- passthrough ----

    def _full(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def init(self, path):
        print("powercut-fs: mounted", flush=True)

    def access(self, path, amode):
        if not os.access(self._full(path), amode):
            raise FuseOSError(errno.EACCES)

    def getattr(self, path, fh=None):
        st = os.fstat(fh.fh) if fh else os.lstat(self._full(path))
        keys = ("st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks")
        attrs = {k: getattr(st, k) for k in keys}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readlink(self, path):
        return os.readlink(self._full(path))

    def opendir(self, path):
        return os.open(self._full(path), os.O_RDONLY | os.O_DIRECTORY)

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(fh)

    def releasedir(self, path, fh):
        os.close(fh)

    def fsyncdir(self, path, datasync, fh):
        """The directory's entries as they are now become its durable entries."""
        self._refuse_if_frozen()
        dir_id = self._id(os.fstat(fh))
        entries = {}
        for name in os.listdir(fh):
            entries[name] = self._id(os.stat(name, dir_fd=fh, follow_symlinks=False))
        self.durable_entries[dir_id] = entries
        self.stats["fsyncdir"] += 1

    def mkdir(self, path, mode):
        os.mkdir(self._full(path), mode)
        self._created(self._full(path))

    def mknod(self, path, mode, dev):
        os.mknod(self._full(path), mode, dev)
        self._created(self._full(path))

    def symlink(self, target, source):
        os.symlink(source, self._full(target))
        self._created(self._full(target))

    def link(self, target, source):
        os.link(self._full(source), self._full(target))

    def rename(self, old, new):
        os.rename(self._full(old), self._full(new))

    def unlink(self, path):
        os.unlink(self._full(path))

    def rmdir(self, path):
        os.rmdir(self._full(path))

    def chmod(self, path, mode):
        os.chmod(self._full(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._full(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        if times is None:
            os.utime(self._full(path), follow_symlinks=False)
        else:
            os.utime(self._full(path), ns=times, follow_symlinks=False)

    def truncate(self, path, length, fh=None):
        if fh:
            os.ftruncate(fh.fh, length)
        else:
            os.truncate(self._full(path), length)

    def statfs(self, path):
        sv = os.statvfs(self._full(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_frsize")
        return {k: getattr(sv, k) for k in keys} | {"f_namemax": sv.f_namemax}

    def create(self, path, mode, fi):
        full = self._full(path)
        existed = os.path.lexists(full)
        fi.fh = os.open(full, (fi.flags & ~os.O_APPEND) | os.O_CREAT, mode)
        if not existed:
            # Only a new inode gets a new id: an existing file keeps its durable data.
            self._created(full)
        return 0

    def open(self, path, fi):
        fi.fh = os.open(self._full(path), fi.flags & ~(os.O_APPEND | os.O_CREAT))
        return 0

    def read(self, path, size, offset, fi):
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
        return os.pwrite(fi.fh, data, offset)

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        os.close(fi.fh)

    def fsync(self, path, datasync, fi):
        """The file's data as it is now becomes its durable data (fsync and fdatasync alike)."""
        self._refuse_if_frozen()
        oid = self._id(os.fstat(fi.fh))
        # The handle may be write-only; read through /proc, which works even after an unlink.
        with open(f"/proc/self/fd/{fi.fh}", "rb") as f:
            self.durable_data[oid] = f.read()
        self.stats["fsync"] += 1
        self._count_sync(path)


def _remove_tree(path):
    if os.path.isdir(path) and not os.path.islink(path):
        for name in os.listdir(path):
            _remove_tree(os.path.join(path, name))
        os.rmdir(path)
    else:
        os.unlink(path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    backing, mountpoint = sys.argv[1], sys.argv[2]
    fs = PowerCutFS(backing)
    FUSE(
        fs,
        mountpoint,
        raw_fi=True,
        foreground=True,
        nothreads=True,
        fsname="powercut",
        # The kernel must neither cache data (every write and read reaches us) nor hide an unlinked
        # open file under a .fuse_hidden name (that name would become durable with its directory).
        direct_io=True,
        hard_remove=True,
        use_ino=True,
        big_writes=True,
        max_write=131072,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
    counts = fs.cut()
    print(
        "powercut-fs: power cut: restored {dirs} directories, {files} files ({empty} never synced, now "
        "empty), {links} extra hard links; {f} file fsyncs, {d} directory fsyncs seen; {u} untracked "
        "inodes; {state}, {r} syncs refused".format(
            f=fs.stats["fsync"],
            d=fs.stats["fsyncdir"],
            u=fs.stats["untracked"],
            state=fs._state(),
            r=fs.stats["refused"],
            **counts,
        ),
        file=sys.stderr,
    )
    if fs.stats["untracked"]:
        sys.exit("powercut-fs: an inode changed behind the mount; the model is void")


if __name__ == "__main__":
    main()
