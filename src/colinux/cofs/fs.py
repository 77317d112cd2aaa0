"""The file system a share shows the guest: confined, in a flat view or meta mode.

``ShareFileSystem`` answers decoded FUSE requests (``fuse_proto.Request``)
with encoded replies. Everything it touches is reached from the share root by
one name at a time: each node holds an ``O_PATH`` descriptor, and a lookup is
``openat(parent, name, O_PATH | O_NOFOLLOW)`` with ``name`` a single component
that is never ``.`` or ``..``. So ``..``, symlinks (never followed on the
host: the guest reads their text and resolves them in its own tree), and
renames racing a lookup cannot lead outside the share. Files are reopened for
I/O through ``/proc/self/fd`` only when the node is a regular file or a
directory, never a symlink.

Flat view (coLinux's only mode, like vfat or smbfs): every file shows the same
owner, group and mode, chosen by the mount; chmod and chown succeed without
persisting; symlinks, device nodes, FIFOs and sockets cannot be made (EPERM).
The owner and modes are per *view*: the guest's ``mount.cofs`` looks up a
reserved name in the share root, ``.cofs-view:uid=U,gid=G,dmode=D,fmode=F``,
and bind-mounts what it returns, so one share can be mounted several times
with different options (coLinux allowed one mount). The reserved name is
answered only in the root of view 0 and never listed.

Meta mode keeps full UNIX metadata in an extended attribute of each host
file (``meta.py``). In both modes OPEN answers ENOSYS on purpose (FUSE
``no_open``): reads and writes name the node, and use one descriptor per
node (``_io_fd``), which saves two round trips per open().
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import resource
import stat
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from colinux.cofs import fuse_proto as fp
from colinux.cofs import meta
from colinux.cofs.fuse_proto import Opcode

log = logging.getLogger("colinux.cofs")

ROOT_ID = 1
# Seconds the guest may cache names (also absent ones) and attributes before
# asking again: how long a change made on the host can go unseen. Each ask
# is a round trip through the guest's virtqueue, the main cost of cofs.
TIMEOUT = 1.0
VIEW_PREFIX = b".cofs-view:"
NO_ENTRY = bytes(fp.ENTRY_OUT_SIZE)  # node id 0: READDIRPLUS carries no lookup
MAX_WRITE = 1 << 20
MAX_PAGES = 256
MAX_READAHEAD = 1 << 20
IO_BUDGET = 64
MAX_VIEWS = 1024
MAX_FORGETS = 1024  # FORGETs kept for an idle moment
# A ctime at least this old (longer than any kernel's clock tick) moves with the
# next change of the inode: see _meta.
META_SETTLE_NS = 50_000_000
DT = {stat.S_IFDIR: 4, stat.S_IFREG: 8, stat.S_IFLNK: 10, stat.S_IFCHR: 2, stat.S_IFBLK: 6,
      stat.S_IFIFO: 1, stat.S_IFSOCK: 12}  # fmt: skip
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
_libc = ctypes.CDLL(None, use_errno=True)
# Flags a create drops to open the descriptor that the node's I/O then uses.
_IO_UNWANTED = os.O_ACCMODE | os.O_APPEND


@dataclass(frozen=True)
class View:
    """How the flat view presents ownership and modes (mount options uid, gid, dmask, fmask)."""

    uid: int = 0
    gid: int = 0
    dmode: int = 0o755
    fmode: int = 0o755

    @classmethod
    def parse(cls, spec: bytes) -> View:
        """``uid=U,gid=G,dmode=D,fmode=F`` (modes in octal); raises ValueError."""
        values = {}
        for item in spec.decode("ascii").split(","):
            key, _, value = item.partition("=")
            if key not in ("uid", "gid", "dmode", "fmode") or key in values:
                raise ValueError(f"view option {item!r}")
            values[key] = int(value, 8 if key.endswith("mode") else 10)
        view = cls(**values)
        if not (0 <= view.uid < 2**32 and 0 <= view.gid < 2**32):
            raise ValueError("uid/gid out of range")
        if view.dmode & ~0o7777 or view.fmode & ~0o7777:
            raise ValueError("mode out of range")
        return view


@dataclass
class Node:
    nodeid: int
    key: tuple[int, int, int]  # (view index, st_dev, st_ino)
    fd: int | None  # O_PATH | O_NOFOLLOW; None when closed to save descriptors
    view: int
    kind: int  # stat.S_IFMT of the inode (never changes)
    nlookup: int = 0
    parent: int = 0  # where it was last seen (parent node id, name): how to reopen it
    name: bytes = b""
    meta_seen: tuple[int, meta.Meta] | None = None  # meta mode: (st_ctime_ns, what it said)


@dataclass
class Handle:
    fd: int
    node: Node
    entries: list[tuple[bytes, int, int]] | None = None  # directories: (name, ino, dtype)


class ShareFileSystem:
    """One share's directory tree, served as FUSE."""

    def __init__(self, root: str, *, readonly: bool = False, meta: bool = False) -> None:
        self.readonly = readonly
        self.meta = meta
        self.writeback = False  # the guest caches writes (FUSE_WRITEBACK_CACHE)
        fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        st = os.fstat(fd)
        self.views: list[View] = [View()]
        # Views named by mount.cofs; never index 0, whose root is the FUSE root
        # (a lookup may not answer with the root's node id).
        self._view_index: dict[View, int] = {}
        root_node = Node(ROOT_ID, (0, st.st_dev, st.st_ino), fd, 0, stat.S_IFDIR, 1)
        self.nodes: dict[int, Node] = {ROOT_ID: root_node}
        self.by_key: dict[tuple[int, int, int], Node] = {root_node.key: root_node}
        self.handles: dict[int, Handle] = {}
        self.forgets: list[tuple[int, int]] = []  # (node id, count): see handle()
        self._next_id = ROOT_ID + 1
        self._next_fh = 1
        self._open_nodes: OrderedDict[int, None] = OrderedDict({ROOT_ID: None})
        self._io: OrderedDict[int, int] = OrderedDict()  # node id -> descriptor for I/O
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.node_budget = max(64, soft // 4)
        self._dispatch: dict[int, Callable[[fp.InHeader, Any], bytes]] = {
            op: getattr(self, "op_" + op.name.lower()) for op in _OPS
        }

    def close(self) -> None:
        for h in self.handles.values():
            _close(h.fd)
        for fd in self._io.values():
            _close(fd)
        self._io.clear()
        for n in self.nodes.values():
            if n.fd is not None:
                _close(n.fd)
        self.handles.clear()
        self.nodes.clear()
        self.by_key.clear()

    # -- the request loop's entry points --------------------------------------

    def handle(self, req: fp.Request) -> bytes | None:
        """The encoded reply to ``req`` (None for requests that get none)."""
        h = req.header
        op = h.opcode
        if op in (Opcode.FORGET, Opcode.BATCH_FORGET, Opcode.INTERRUPT):
            # Forgetting closes descriptors, and closing the last one of a file the
            # guest removed deletes it on the host: work nobody waits for, done when
            # the server is idle (lookup counts add up in any order).
            if op == Opcode.FORGET and req.args is not None:
                self.forgets.append((h.nodeid, req.args.nlookup))
            elif op == Opcode.BATCH_FORGET and req.args is not None:
                self.forgets.extend(req.args.forgets)
            if len(self.forgets) > MAX_FORGETS:
                self.forget_now()
            return None
        method = self._dispatch.get(op)
        if method is None:
            return fp.encode_error(h.unique, errno.ENOSYS)
        try:
            body = method(h, req.args)
        except OSError as e:
            return fp.encode_error(h.unique, e.errno or errno.EIO)
        except (KeyError, ValueError) as e:
            log.debug("cofs: %s rejected: %s", Opcode(op).name, e)
            return fp.encode_error(
                h.unique, errno.EINVAL if isinstance(e, ValueError) else errno.EBADF
            )
        return fp.encode_reply(h.unique, body)

    def slow(self, req: fp.Request) -> Callable[[], bytes] | None:
        """For a request that may block for long (fsync), the blocking part, which another
        thread may run; it returns the reply. None for every other request."""
        h, a = req.header, req.args
        if h.opcode not in (Opcode.FSYNC, Opcode.FSYNCDIR) or a is None:
            return None
        try:
            fd = self._io_fd(h.nodeid, a.fh) if h.opcode == Opcode.FSYNC else self._handle(a.fh).fd
            fd = os.dup(fd)  # its own: this thread may close the node's meanwhile
        except OSError as e:
            error = fp.encode_error(h.unique, e.errno or errno.EIO)
            return lambda: error
        sync = os.fdatasync if h.opcode == Opcode.FSYNC and a.flags & 1 else os.fsync

        def run() -> bytes:
            try:
                sync(fd)
            except OSError as e:
                return fp.encode_error(h.unique, e.errno or errno.EIO)
            finally:
                os.close(fd)
            return fp.encode_reply(h.unique)

        return run

    def forget_now(self) -> None:
        """Carry out the FORGETs the guest sent."""
        forgets, self.forgets = self.forgets, []
        for nodeid, count in forgets:
            self._forget(nodeid, count)

    def read_into(self, nodeid: int, fh: int, offset: int, views: list[memoryview]) -> int:
        """FUSE_READ straight into guest memory."""
        fd = self._io_fd(nodeid, fh)
        if not views:
            return 0
        return os.preadv(fd, views, offset)

    # Files are not opened per guest open: OPEN answers ENOSYS, which tells
    # the guest kernel (FUSE "no_open") to skip OPEN and RELEASE, two round
    # trips of every open(). Reads and writes then name only the node, and go
    # to one descriptor per node, opened read-write when the host allows,
    # kept for the most recently used IO_BUDGET nodes.

    def _io_fd(self, nodeid: int, fh: int = 0) -> int:
        handle = self.handles.get(fh) if fh else None
        if handle is not None:
            return handle.fd
        fd = self._io.get(nodeid)
        if fd is not None:
            self._io.move_to_end(nodeid)
            return fd
        node = self._node(nodeid)
        if node.kind != stat.S_IFREG or self._guest_kind(node) != stat.S_IFREG:
            raise OSError(errno.EBADF, "not a regular file")
        path = self._proc(node)
        try:
            fd = os.open(path, (os.O_RDONLY if self.readonly else os.O_RDWR) | os.O_CLOEXEC)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ETXTBSY):
                raise
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        self._keep_io(nodeid, fd)
        return fd

    def _keep_io(self, nodeid: int, fd: int) -> None:
        self._io[nodeid] = fd
        while len(self._io) > IO_BUDGET:
            _close(self._io.popitem(last=False)[1])

    # -- helpers ----------------------------------------------------------------

    def _node(self, nodeid: int) -> Node:
        node = self.nodes.get(nodeid)
        if node is None:
            raise OSError(errno.ESTALE, "unknown node")
        return node

    def _handle(self, fh: int) -> Handle:
        handle = self.handles.get(fh)
        if handle is None:
            raise OSError(errno.EBADF, "unknown file handle")
        return handle

    def _dir(self, nodeid: int) -> Node:
        node = self._node(nodeid)
        if node.kind != stat.S_IFDIR:
            raise OSError(errno.ENOTDIR, "not a directory")
        return node

    def _writable(self) -> None:
        if self.readonly:
            raise OSError(errno.EROFS, "read-only share")

    def _meta(self, node: Node, st: os.stat_result | None = None) -> meta.Meta:
        """Meta mode: what the guest sees of ``node``'s type, mode and owner."""
        st = st or os.fstat(self._fd(node))
        cached = node.meta_seen
        if cached is not None and cached[0] == st.st_ctime_ns:
            return cached[1]
        found = None
        if node.kind in (stat.S_IFREG, stat.S_IFDIR):
            found = meta.read(f"/proc/self/fd/{self._fd(node)}")
        m = found if found is not None and _consistent(node.kind, found.mode) else None
        m = m or meta.Meta(st.st_mode, 0, 0, 0)
        # Any change to the attribute (or the mode) moves the inode's ctime, so the
        # same ctime means the same metadata: no getxattr through /proc (a path walk)
        # for each LOOKUP and GETATTR. Only a ctime older than the clock's tick is
        # trusted: a change in the same tick as the last one would keep the ctime.
        if time.time_ns() - st.st_ctime_ns > META_SETTLE_NS:
            node.meta_seen = (st.st_ctime_ns, m)
        return m

    def _guest_kind(self, node: Node) -> int:
        return stat.S_IFMT(self._meta(node).mode) if self.meta else node.kind

    def _attr(self, node: Node, st: os.stat_result) -> bytes:
        """The encoded fuse_attr the guest sees for ``node``."""
        if self.meta:
            m = self._meta(node, st)
            return fp.encode_stat(st, m.mode, m.uid, m.gid, m.rdev)
        view = self.views[node.view]
        kind = stat.S_IFMT(st.st_mode)
        if kind == stat.S_IFDIR:
            mode = kind | view.dmode
        elif kind == stat.S_IFLNK:
            mode = kind | 0o777
        else:
            mode = kind | view.fmode
        return fp.encode_stat(st, mode, view.uid, view.gid, 0)

    def _entry(self, parent: Node, name: bytes) -> bytes:
        """Look ``name`` up beneath ``parent``; count the lookup; the entry reply."""
        node, st = self._look(parent, name)
        return fp.encode_entry(node.nodeid, self._attr(node, st), TIMEOUT)

    def _look(self, parent: Node, name: bytes) -> tuple[Node, os.stat_result]:
        """``_entry`` before the reply is encoded: the node, counted, and its stat."""
        _check_component(name)
        parent_fd = self._fd(parent)
        # A name the guest asks about again (its entry expired) is mostly a node
        # known here with its descriptor open: one fstatat finds it, where opening
        # the name and closing the duplicate cost two calls more. The descriptor pins
        # the inode, so no other file can have taken its number meanwhile.
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
        node = self.by_key.get((parent.view, st.st_dev, st.st_ino))
        if node is not None and node.fd is not None:
            self._open_nodes.move_to_end(node.nodeid)
            node.parent, node.name = parent.nodeid, name
            node.nlookup += 1
            return node, st
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=parent_fd)
        try:
            st = os.fstat(fd)
        except OSError:
            _close(fd)
            raise
        return self._known(parent.view, fd, st, parent.nodeid, name), st

    def _remember(self, view: int, fd: int, st: os.stat_result, parent: int, name: bytes) -> bytes:
        node = self._known(view, fd, st, parent, name)
        return fp.encode_entry(node.nodeid, self._attr(node, st), TIMEOUT)

    def _known(self, view: int, fd: int, st: os.stat_result, parent: int, name: bytes) -> Node:
        """The node for the inode ``fd`` reaches (taking ``fd``), its lookup counted."""
        key = (view, st.st_dev, st.st_ino)
        node = self.by_key.get(key)
        if node is None:
            node = Node(self._next_id, key, fd, view, stat.S_IFMT(st.st_mode))
            self._next_id += 1
            self.nodes[node.nodeid] = node
            self.by_key[key] = node
            self._opened(node)
        elif node.fd is None:
            node.fd = fd
            self._opened(node)
        else:
            _close(fd)
        node.parent, node.name = parent, name
        node.nlookup += 1
        return node

    # Each known node holds an O_PATH descriptor, but a guest may know more
    # files (100k in one directory, say) than this process may open: past
    # ``node_budget`` the least recently used are closed, and reopened from
    # their parent by name, checked to be the same inode (else ESTALE).

    def _fd(self, node: Node) -> int:
        if node.fd is None:
            return self._reopen(node)
        self._open_nodes.move_to_end(node.nodeid)
        return node.fd

    def _reopen(self, node: Node) -> int:
        parent = self.nodes.get(node.parent)
        if parent is None or parent is node:
            raise OSError(errno.ESTALE, "node no longer reachable")
        fd = os.open(node.name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._fd(parent))
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != node.key[1:]:
            os.close(fd)
            raise OSError(errno.ESTALE, "the file was replaced on the host")
        node.fd = fd
        self._opened(node)
        return fd

    def _opened(self, node: Node) -> None:
        self._open_nodes[node.nodeid] = None
        while len(self._open_nodes) > self.node_budget:
            nodeid = next(iter(self._open_nodes))
            del self._open_nodes[nodeid]
            old = self.nodes.get(nodeid)
            if old is None or old.fd is None:
                continue
            if nodeid == ROOT_ID:  # the anchor of every path: never closed
                self._open_nodes[nodeid] = None
                continue
            _close(old.fd)
            old.fd = None

    def _moved(self, view: int, directory: Node, name: bytes) -> None:
        """After a rename: the inode now at ``directory``/``name`` is reopened from there."""
        try:
            st = os.stat(name, dir_fd=self._fd(directory), follow_symlinks=False)
        except OSError:
            return
        node = self.by_key.get((view, st.st_dev, st.st_ino))
        if node is not None:
            node.parent, node.name = directory.nodeid, name

    def _forget(self, nodeid: int, count: int) -> None:
        node = self.nodes.get(nodeid)
        if node is None or nodeid == ROOT_ID:
            return
        node.nlookup -= count
        if node.nlookup <= 0:
            del self.nodes[nodeid]
            del self.by_key[node.key]
            self._open_nodes.pop(nodeid, None)
            io = self._io.pop(nodeid, None)
            if io is not None:
                _close(io)
            if node.fd is not None:
                _close(node.fd)

    def _proc(self, node: Node) -> str:
        """A path that reopens the node's inode (only for files and directories)."""
        if node.kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise OSError(errno.ELOOP if node.kind == stat.S_IFLNK else errno.EACCES, "")
        return f"/proc/self/fd/{self._fd(node)}"

    def _new_handle(self, fd: int, node: Node) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self.handles[fh] = Handle(fd, node)
        return fh

    # -- FUSE operations ----------------------------------------------------------

    def op_init(self, h: fp.InHeader, a: fp.InitIn) -> bytes:
        if a.major != fp.KERNEL_VERSION:
            raise ValueError(f"FUSE major version {a.major}")
        wanted = (
            fp.INIT_ASYNC_READ | fp.INIT_BIG_WRITES
            | fp.INIT_AUTO_INVAL_DATA | fp.INIT_PARALLEL_DIROPS | fp.INIT_MAX_PAGES
            | fp.INIT_DO_READDIRPLUS | fp.INIT_READDIRPLUS_AUTO
            | fp.INIT_CACHE_SYMLINKS  # a host symlink never changes: a new one is a new inode
        )  # fmt: skip
        self.writeback = bool(a.flags & fp.INIT_WRITEBACK_CACHE)
        return fp.encode_init(
            flags=a.flags & wanted,
            max_readahead=min(a.max_readahead, MAX_READAHEAD),
            max_write=MAX_WRITE,
            max_pages=MAX_PAGES,
        )

    def op_destroy(self, h: fp.InHeader, a: None) -> bytes:
        return b""

    def op_lookup(self, h: fp.InHeader, a: fp.NameIn) -> bytes:
        parent = self._dir(h.nodeid)
        _check_component(a.name)  # a view's name too
        if h.nodeid == ROOT_ID and a.name.startswith(VIEW_PREFIX):
            return self._lookup_view(a.name[len(VIEW_PREFIX) :])
        try:
            return self._entry(parent, a.name)
        except FileNotFoundError:
            # Node id 0: "no such name", and the guest may cache that too.
            return fp.encode_entry(0, fp.NO_ATTR, TIMEOUT)

    def _lookup_view(self, spec: bytes) -> bytes:
        try:
            view = View.parse(spec)
        except (ValueError, UnicodeDecodeError) as e:
            raise OSError(errno.EINVAL, str(e)) from e
        index = self._view_index.get(view)
        if index is None:
            if len(self.views) > MAX_VIEWS:  # each is kept: a guest may not make endless ones
                raise OSError(errno.ENOSPC, "too many views of this share")
            index = len(self.views)
            self.views.append(view)
            self._view_index[view] = index
        root = self.nodes[ROOT_ID]
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY, dir_fd=self._fd(root))
        return self._remember(index, fd, os.fstat(fd), ROOT_ID, b".")

    def op_getattr(self, h: fp.InHeader, a: fp.GetattrIn) -> bytes:
        node = self._node(h.nodeid)
        return fp.encode_attr_out(self._attr(node, os.fstat(self._fd(node))), TIMEOUT)

    def op_setattr(self, h: fp.InHeader, a: fp.SetattrIn) -> bytes:
        node = self._node(h.nodeid)
        if a.valid & (fp.FATTR_SIZE | fp.FATTR_ATIME | fp.FATTR_MTIME):
            self._writable()
        if a.valid & fp.FATTR_SIZE:
            if node.nodeid in self._io:
                os.ftruncate(self._io[node.nodeid], a.size)
            else:
                os.truncate(self._proc(node), a.size)
        if a.valid & (fp.FATTR_ATIME | fp.FATTR_MTIME) and node.kind != stat.S_IFLNK:
            st = os.fstat(self._fd(node))
            atime = _when(a.valid, fp.FATTR_ATIME, fp.FATTR_ATIME_NOW, a.atime, a.atimensec)
            mtime = _when(a.valid, fp.FATTR_MTIME, fp.FATTR_MTIME_NOW, a.mtime, a.mtimensec)
            now = None
            if atime == "now" or mtime == "now":
                now = time.time_ns()
            ns = (
                st.st_atime_ns if atime is None else now if atime == "now" else atime,
                st.st_mtime_ns if mtime is None else now if mtime == "now" else mtime,
            )
            os.utime(self._proc(node), ns=ns)  # type: ignore[arg-type]
        if self.meta and a.valid & (fp.FATTR_MODE | fp.FATTR_UID | fp.FATTR_GID):
            self._writable()
            m = self._meta(node)
            kind = stat.S_IFMT(m.mode)
            self._set_meta(node, meta.Meta(
                kind | (a.mode & 0o7777) if a.valid & fp.FATTR_MODE else m.mode,
                a.uid if a.valid & fp.FATTR_UID else m.uid,
                a.gid if a.valid & fp.FATTR_GID else m.gid,
                m.rdev,
            ))  # fmt: skip
        # Flat view: mode, uid and gid changes succeed and are not kept (as on vfat).
        return fp.encode_attr_out(self._attr(node, os.fstat(self._fd(node))), TIMEOUT)

    def op_readlink(self, h: fp.InHeader, a: None) -> bytes:
        node = self._node(h.nodeid)
        if self.meta and node.kind == stat.S_IFREG and self._guest_kind(node) == stat.S_IFLNK:
            with open(self._proc(node), "rb") as f:
                return f.read(4096)
        if node.kind != stat.S_IFLNK:
            raise OSError(errno.EINVAL, "not a symlink")
        return os.fsencode(os.readlink("", dir_fd=self._fd(node)))

    def op_symlink(self, h: fp.InHeader, a: fp.SymlinkIn) -> bytes:
        if not self.meta:
            raise OSError(errno.EPERM, "flat share: no symlinks")
        return self._make_special(h, a.name, stat.S_IFLNK | 0o777, 0, a.target)

    def _make_special(
        self, h: fp.InHeader, name: bytes, mode: int, rdev: int, data: bytes
    ) -> bytes:
        """Meta mode: a symlink, device node, FIFO or socket as a regular host file."""
        self._writable()
        parent = self._dir(h.nodeid)
        _check_component(name)
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=self._fd(parent))  # fmt: skip
        try:
            os.write(fd, data)
            meta.write(f"/proc/self/fd/{fd}", meta.Meta(mode, h.uid, h.gid, rdev))
        except OSError:
            os.unlink(name, dir_fd=self._fd(parent))
            raise
        finally:
            os.close(fd)
        return self._entry(parent, name)

    def _set_meta(self, node: Node, m: meta.Meta) -> None:
        if node.kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise OSError(errno.EPERM, "a host special file keeps no metadata")
        node.meta_seen = None
        meta.write(f"/proc/self/fd/{self._fd(node)}", m)

    def _created(self, h: fp.InHeader, parent: Node, name: bytes, mode: int) -> None:
        """Meta mode: the owner and mode of a file or directory the guest just made.

        What a host file without metadata shows (its host mode, owned by root)
        is not written: a root-made file with the host's mode costs no
        extended attribute, and the host journal one write less.
        """
        if self.meta:
            node_fd = os.open(name, os.O_PATH | os.O_NOFOLLOW, dir_fd=self._fd(parent))
            try:
                self._made(h, node_fd, f"/proc/self/fd/{node_fd}", mode)
            finally:
                os.close(node_fd)

    def _made(self, h: fp.InHeader, fd: int, target: str | int, mode: int) -> None:
        """Meta mode: ``_created`` for the file open as ``fd`` (``target``: how to reach
        its attributes, the descriptor itself when it is not O_PATH)."""
        if h.uid or h.gid or os.fstat(fd).st_mode != mode:
            meta.write(target, meta.Meta(mode, h.uid, h.gid, 0))

    def op_mknod(self, h: fp.InHeader, a: fp.MknodIn) -> bytes:
        # Flat view: device nodes, FIFOs and sockets cannot be made; a plain
        # file can (mknod(S_IFREG) is how some programs create files).
        self._writable()
        kind = stat.S_IFMT(a.mode) or stat.S_IFREG
        mode = kind | (a.mode & ~a.umask & 0o7777)
        if kind != stat.S_IFREG:
            if not self.meta:
                raise OSError(errno.EPERM, "flat share: no special files")
            if kind not in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
                raise OSError(errno.EINVAL, "file type")
            return self._make_special(h, a.name, mode, a.rdev, b"")
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        fd = os.open(a.name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW, 0o666,
                     dir_fd=self._fd(parent))  # fmt: skip
        os.close(fd)
        self._created(h, parent, a.name, mode)
        return self._entry(parent, a.name)

    def op_link(self, h: fp.InHeader, a: fp.LinkIn) -> bytes:
        if not self.meta:
            raise OSError(errno.EPERM, "flat share: no hard links")
        self._writable()
        source = self._node(a.oldnodeid)
        if source.kind != stat.S_IFREG:
            raise OSError(errno.EPERM, "hard links to directories")
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        os.link(self._proc(source), a.name, dst_dir_fd=self._fd(parent), follow_symlinks=True)
        return self._entry(parent, a.name)

    def op_mkdir(self, h: fp.InHeader, a: fp.MkdirIn) -> bytes:
        self._writable()
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        os.mkdir(a.name, 0o777, dir_fd=self._fd(parent))
        self._created(h, parent, a.name, stat.S_IFDIR | (a.mode & ~a.umask & 0o7777))
        return self._entry(parent, a.name)

    def op_unlink(self, h: fp.InHeader, a: fp.NameIn) -> bytes:
        self._writable()
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        os.unlink(a.name, dir_fd=self._fd(parent))
        return b""

    def op_rmdir(self, h: fp.InHeader, a: fp.NameIn) -> bytes:
        self._writable()
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        os.rmdir(a.name, dir_fd=self._fd(parent))
        return b""

    def op_rename(self, h: fp.InHeader, a: fp.RenameIn) -> bytes:
        self._writable()
        old_dir = self._dir(h.nodeid)
        new_dir = self._dir(a.newdir)
        _check_component(a.old)
        _check_component(a.new)
        if a.flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE):
            raise OSError(errno.EINVAL, "rename flags")
        if a.flags:
            rc = _libc.renameat2(
                self._fd(old_dir), a.old, self._fd(new_dir), a.new, ctypes.c_uint(a.flags)
            )
            if rc != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
        else:
            os.rename(a.old, a.new, src_dir_fd=self._fd(old_dir), dst_dir_fd=self._fd(new_dir))
        self._moved(new_dir.view, new_dir, a.new)
        if a.flags & RENAME_EXCHANGE:
            self._moved(old_dir.view, old_dir, a.old)
        return b""

    op_rename2 = op_rename

    def _host_flags(self, flags: int) -> int:
        flags = (flags & ~os.O_NOCTTY) | os.O_CLOEXEC
        if self.writeback:
            # The guest's page cache writes back whole pages, reading first the
            # parts it lacks (so write-only opens must read), and it computes
            # append offsets itself.
            flags &= ~os.O_APPEND
            if flags & os.O_ACCMODE == os.O_WRONLY:
                flags = flags & ~os.O_ACCMODE | os.O_RDWR
        return flags

    def op_create(self, h: fp.InHeader, a: fp.CreateIn) -> bytes:
        self._writable()
        parent = self._dir(h.nodeid)
        _check_component(a.name)
        flags = self._host_flags(a.flags) | os.O_CREAT | os.O_NOFOLLOW
        # Opened read-write where the host allows, the new descriptor becomes the
        # node's for I/O (see _io_fd): the WRITEs after a create need no open of their
        # own (an open through /proc, a path walk, and an eviction from the budget).
        keep = True
        try:
            fd, made = self._create(parent, a.name, flags & ~_IO_UNWANTED | os.O_RDWR)
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.ETXTBSY):
                raise
            fd, made = self._create(parent, a.name, flags)
            keep = False
        try:
            if made and self.meta:
                self._made(h, fd, fd, stat.S_IFREG | (a.mode & ~a.umask & 0o7777))
            node, st = self._look(parent, a.name)
            # The name may have been replaced on the host meanwhile; an old file
            # in meta mode may be something else in the guest (see _io_fd).
            keep = keep and _devino(os.fstat(fd)) == _devino(st) and (made or not self.meta)
            entry = fp.encode_entry(node.nodeid, self._attr(node, st), TIMEOUT)
        except OSError:
            os.close(fd)
            raise
        if keep and node.nodeid not in self._io:
            self._keep_io(node.nodeid, fd)
        else:
            os.close(fd)
        return entry + fp.encode_open(0, fp.FOPEN_KEEP_CACHE)

    def _create(self, parent: Node, name: bytes, flags: int) -> tuple[int, bool]:
        """open(O_CREAT): the descriptor, and whether the file is new (meta mode needs to
        know: the metadata of a file that was there stays)."""
        if not self.meta or flags & os.O_EXCL:
            return os.open(name, flags, 0o666, dir_fd=self._fd(parent)), True
        for _ in range(3):  # each miss means someone else made or removed it meanwhile
            with contextlib.suppress(FileExistsError):
                return os.open(name, flags | os.O_EXCL, 0o666, dir_fd=self._fd(parent)), True
            with contextlib.suppress(FileNotFoundError):
                return os.open(name, flags & ~os.O_CREAT, dir_fd=self._fd(parent)), False
        raise OSError(errno.EAGAIN, "the file keeps appearing and vanishing")

    def op_write(self, h: fp.InHeader, a: fp.WriteIn) -> bytes:
        self._writable()
        try:
            fd = self._io_fd(h.nodeid, a.fh)
            return fp.encode_write_out(os.pwritev(fd, a.data, a.offset) if a.size else 0)
        except OSError as e:
            if e.errno == errno.EBADF:  # the host lets us only read it
                raise OSError(errno.EACCES, "read-only on the host") from e
            raise

    def op_release(self, h: fp.InHeader, a: fp.FhIn) -> bytes:
        handle = self.handles.pop(a.fh, None)
        if handle is not None:
            _close(handle.fd)
        return b""

    op_releasedir = op_release

    def op_fsync(self, h: fp.InHeader, a: fp.FhIn) -> bytes:
        (os.fdatasync if a.flags & 1 else os.fsync)(self._io_fd(h.nodeid, a.fh))
        return b""

    def op_fsyncdir(self, h: fp.InHeader, a: fp.FhIn) -> bytes:
        os.fsync(self._handle(a.fh).fd)
        return b""

    def op_opendir(self, h: fp.InHeader, a: fp.OpenIn) -> bytes:
        node = self._dir(h.nodeid)
        fd = os.open(self._proc(node), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return fp.encode_open(self._new_handle(fd, node))

    def op_readdir(self, h: fp.InHeader, a: fp.ReadIn) -> bytes:
        handle = self._handle(a.fh)
        if handle.entries is None or a.offset == 0:
            handle.entries = self._list(handle)
        out = bytearray()
        for index in range(a.offset, len(handle.entries)):
            name, ino, dtype = handle.entries[index]
            if len(out) + fp.dirent_size(name) > a.size:
                break
            out += fp.encode_dirent(ino, index + 1, dtype, name)
        return bytes(out)

    def op_readdirplus(self, h: fp.InHeader, a: fp.ReadIn) -> bytes:
        """READDIR with each entry's lookup: ``ls -l`` of 100k files in few round trips."""
        handle = self._handle(a.fh)
        if handle.entries is None or a.offset == 0:
            handle.entries = self._list(handle)
        parent = handle.node
        out = bytearray()
        for index in range(a.offset, len(handle.entries)):
            name, ino, dtype = handle.entries[index]
            if len(out) + fp.ENTRY_OUT_SIZE + fp.dirent_size(name) > a.size:
                break  # checked first: every entry sent counts as a lookup
            entry = NO_ENTRY
            if name not in (b".", b".."):
                try:
                    entry = self._entry(parent, name)
                    dtype = fp.entry_mode(entry) >> 12
                except OSError:
                    pass  # gone meanwhile: a bare name, the guest will look it up
            out += entry
            out += fp.encode_dirent(ino, index + 1, dtype, name)
        return bytes(out)

    def _list(self, handle: Handle) -> list[tuple[bytes, int, int]]:
        st = os.fstat(handle.fd)
        entries = [(b".", st.st_ino, 4), (b"..", st.st_ino, 4)]
        with os.scandir(handle.fd) as it:
            for e in it:
                name = os.fsencode(e.name)
                if handle.node.nodeid == ROOT_ID and name.startswith(VIEW_PREFIX):
                    continue
                dtype = _dtype(e)
                if self.meta and dtype == DT[stat.S_IFREG]:
                    dtype = 0  # may be a symlink or device in the guest: it will ask
                entries.append((name, e.inode(), dtype))
        return entries

    def op_statfs(self, h: fp.InHeader, a: None) -> bytes:
        node = self._node(h.nodeid)
        s = (
            os.statvfs(self._proc(node))
            if node.kind != stat.S_IFLNK
            else os.statvfs(self._proc(self.nodes[ROOT_ID]))
        )
        return fp.encode_statfs(s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree,
                                s.f_frsize, s.f_namemax)  # fmt: skip

    def op_access(self, h: fp.InHeader, a: fp.AccessIn) -> bytes:
        return b""  # the guest kernel checks permissions (virtiofs: default_permissions)

    def op_fallocate(self, h: fp.InHeader, a: fp.FallocateIn) -> bytes:
        self._writable()
        if a.mode:
            raise OSError(errno.EOPNOTSUPP, "fallocate mode")
        os.posix_fallocate(self._io_fd(h.nodeid, a.fh), a.offset, a.length)
        return b""

    def op_syncfs(self, h: fp.InHeader, a: None) -> bytes:
        return b""


_OPS = {
    Opcode.INIT, Opcode.DESTROY, Opcode.LOOKUP, Opcode.GETATTR, Opcode.SETATTR,
    Opcode.READLINK, Opcode.SYMLINK, Opcode.MKNOD, Opcode.LINK, Opcode.MKDIR, Opcode.UNLINK,
    Opcode.RMDIR, Opcode.RENAME, Opcode.RENAME2, Opcode.CREATE, Opcode.WRITE,
    Opcode.RELEASE, Opcode.RELEASEDIR, Opcode.FSYNC, Opcode.FSYNCDIR,
    Opcode.OPENDIR, Opcode.READDIR, Opcode.READDIRPLUS, Opcode.STATFS, Opcode.ACCESS,
    Opcode.FALLOCATE,
    Opcode.SYNCFS,
}  # fmt: skip


def _dtype(entry: os.DirEntry[str]) -> int:
    """The entry's type from the directory itself (d_type), without a stat per entry."""
    try:
        if entry.is_symlink():
            return DT[stat.S_IFLNK]
        if entry.is_dir(follow_symlinks=False):
            return DT[stat.S_IFDIR]
        if entry.is_file(follow_symlinks=False):
            return DT[stat.S_IFREG]
    except OSError:
        pass
    return 0  # DT_UNKNOWN: the guest will look it up


def _consistent(host_kind: int, mode: int) -> bool:
    """Metadata may make a host file anything but a directory, a directory nothing else."""
    kind = stat.S_IFMT(mode)
    return (kind == stat.S_IFDIR) == (host_kind == stat.S_IFDIR)


def _check_component(name: bytes) -> None:
    """One path component that stays in its directory (EINVAL), of at most NAME_MAX
    bytes (ENAMETOOLONG, what POSIX and every Linux file system say: a user's mistake,
    answered without a word on the terminal)."""
    if name in (b".", b"..") or not name or b"/" in name or b"\0" in name:
        raise OSError(errno.EINVAL, f"bad name {name!r}")
    if len(name) > fp.NAME_MAX:
        raise OSError(errno.ENAMETOOLONG, f"a name of {len(name)} bytes")


def _devino(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


def _when(valid: int, flag: int, now_flag: int, sec: int, nsec: int) -> int | str | None:
    if valid & now_flag:
        return "now"
    if valid & flag:
        return sec * 10**9 + nsec
    return None


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)
