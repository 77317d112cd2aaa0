"""CofsServer: one share's vhost-user back end, on its own thread.

The server listens on a unix socket before the engine starts; UML's
``virtio_uml`` connects when it probes ``virtio_uml.device=SOCKET:26`` and
drives the vhost-user handshake. After the guest mounts the share, requests
arrive on the virtqueues; the server decodes each one, lets the share's
``ShareFileSystem`` answer it, and hands the buffers back. A guest that
reboots reconnects, and the server starts afresh. Nothing a guest sends can
end the server: malformed messages and requests are logged and refused::

    server = CofsServer(socket_path, "/home/me/data", tag="cofs0")
    server.start()          # listening; now start the engine
    ...
    server.stop()
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import resource
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from colinux.cofs import fuse_proto as fp
from colinux.cofs import vhost_user as vu
from colinux.cofs.fs import MAX_WRITE, ShareFileSystem
from colinux.cofs.vhost_user import Request
from colinux.cofs.virtqueue import (
    Chain,
    DescriptorError,
    GuestMemory,
    Virtqueue,
    close_all,
    drain,
    signal,
)

log = logging.getLogger("colinux.cofs")

MAX_REQUEST = MAX_WRITE + 64 * 1024  # the largest WRITE plus its header and arguments
NUM_QUEUES = 2  # hiprio + one request queue
IO_WORKERS = 4  # threads for requests that may block for long
VIRTIO_ID_FS = 26
_WRITE = fp.Opcode.WRITE.to_bytes(4, "little")
# Where to append each connection's request statistics (bench/cofs.py).
STATS_ENV = "COLINUX_COFS_STATS"


class _Stats:
    """Requests and the server's time per FUSE opcode for one connection: what
    bench/cofs.py sets against the guest's time to say where a round trip goes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.ops: dict[str, list[int]] = {}  # opcode name -> [count, nanoseconds]
        # From a kick seen to the replies in the used ring, in nanoseconds: what the
        # guest waits for. Raising the interrupt is left out: it wakes the engine,
        # which may then run on this thread's core before the write returns.
        self.busy = 0
        self.kicks = 0
        self.answered = 0

    def op(self, chain: Chain, ns: int) -> None:
        head = chain.read_prefix(8)
        entry = self.ops.setdefault(_opcode_name(head) if len(head) == 8 else "-1", [0, 0])
        entry[0] += 1
        entry[1] += ns

    def write(self, tag: str) -> None:
        if not self.kicks:
            return
        record = {"tag": tag, "kicks": self.kicks, "busy_ns": self.busy, "ops": self.ops}
        with contextlib.suppress(OSError), open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class _Queue:
    def __init__(self) -> None:
        self.size = 0
        self.base = 0
        self.addr: vu.VringAddr | None = None
        self.kick: int | None = None
        self.call: int | None = None
        self.ring: Virtqueue | None = None

    def reset(self) -> None:
        if self.ring is not None:
            self.ring.release()
        close_all((self.kick, self.call))
        self.__init__()  # type: ignore[misc]


class CofsServer:
    """Serves one share to one guest at a time over a vhost-user socket."""

    def __init__(
        self, socket_path: str, root: str, *, tag: str, readonly: bool = False, meta: bool = False
    ) -> None:
        self.socket_path = socket_path
        self.root = root
        self.tag = tag
        self.readonly = readonly
        self.meta = meta
        self.config = vu.virtio_fs_config(tag)
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._conn: socket.socket | None = None
        self._memory: GuestMemory | None = None
        self._queues = [_Queue() for _ in range(NUM_QUEUES)]
        self._fs: ShareFileSystem | None = None
        self._slave_fd: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._done = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)  # a worker finished
        self._finished: deque[tuple[int, Virtqueue, int, Chain, bytes]] = deque()
        self._stats: _Stats | None = None

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        # The guest may hold many files: every descriptor this process may have.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        ShareFileSystem(
            self.root, readonly=self.readonly, meta=self.meta
        ).close()  # fail now if unusable
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old = os.umask(0o177)
        try:
            listener.bind(self.socket_path)
        finally:
            os.umask(old)
        listener.listen(1)
        self._listener = listener
        self._pool = ThreadPoolExecutor(IO_WORKERS, thread_name_prefix=f"cofs-{self.tag}-io")
        self._thread = threading.Thread(target=self._run, name=f"cofs-{self.tag}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        os.write(self._stop_w, b"x")
        if self._thread is not None:
            self._thread.join(5)
        if self._listener is not None:
            self._listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        if self._pool is not None:  # a started fsync ends first: its worker signals _done
            self._pool.shutdown(wait=True, cancel_futures=True)
        close_all((self._stop_r, self._stop_w, self._done))

    def _run(self) -> None:
        assert self._listener is not None
        while True:
            ready, _, _ = select.select([self._listener.fileno(), self._stop_r], [], [])
            if self._stop_r in ready:
                return
            conn, _ = self._listener.accept()
            self._conn = conn
            fields = {"share": self.root, "tag": self.tag}
            log.info("cofs %s: the guest connected", self.tag, extra={"fields": fields})
            self._fs = ShareFileSystem(self.root, readonly=self.readonly, meta=self.meta)
            stats_path = os.environ.get(STATS_ENV)
            self._stats = _Stats(stats_path) if stats_path else None
            try:
                if self._serve() == "stop":
                    return
            except Exception:
                log.exception("cofs %s: the connection failed", self.tag)
            finally:
                try:
                    self._disconnect()
                except Exception:  # never end the thread: a rebooted guest reconnects
                    log.exception("cofs %s: cleaning up the connection failed", self.tag)

    def _disconnect(self) -> None:
        log.info("cofs %s: the guest disconnected", self.tag)
        if self._stats is not None:
            self._stats.write(self.tag)
            self._stats = None
        self._finished.clear()  # for rings that are going
        for q in self._queues:
            q.reset()
        if self._memory is not None:
            self._memory.close()
            self._memory = None
        if self._fs is not None:
            self._fs.close()
            self._fs = None
        close_all((self._slave_fd,))
        self._slave_fd = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _serve(self) -> str:
        assert self._conn is not None
        poller = select.poll()
        poller.register(self._conn.fileno(), select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        poller.register(self._done, select.POLLIN)
        conn = self._conn.fileno()
        kicks: dict[int, int] = {}  # kick fd -> queue index, request queues before hiprio
        while True:
            # Kick descriptors change with SET_VRING_KICK: keep the poll set in step.
            wanted = {
                q.kick: i for i, q in reversed(list(enumerate(self._queues))) if q.kick is not None
            }
            if wanted != kicks:
                for fd in kicks:
                    poller.unregister(fd)
                for fd in wanted:
                    poller.register(fd, select.POLLIN)
                kicks = wanted
            # Until the next vhost-user message, only kicks: no need to look again.
            while True:
                ready = {fd for fd, _ in poller.poll(0 if self._fs and self._fs.forgets else None)}
                if not ready:  # idle: time for what nobody waits for
                    assert self._fs is not None
                    self._fs.forget_now()
                    continue
                if self._stop_r in ready:
                    return "stop"
                if self._done in ready:
                    drain(self._done)
                    self._complete()
                for fd, index in kicks.items():
                    if fd in ready:
                        started = time.perf_counter_ns() if self._stats is not None else 0
                        drain(fd)
                        self._process(index)
                        if self._stats is not None:
                            self._stats.busy += self._stats.answered - started
                            self._stats.kicks += 1
                # Messages last: one may close the kick descriptors polled above.
                if conn in ready:
                    if not self._message():
                        return "closed"
                    break

    # -- vhost-user -----------------------------------------------------------------

    def _message(self) -> bool:
        """Handle one vhost-user message; False when the front end has gone."""
        assert self._conn is not None
        data, fds, _, _ = socket.recv_fds(self._conn, vu.HEADER_SIZE, vu.MAX_REGIONS)
        if not data:
            close_all(fds)
            return False
        try:
            header = vu.decode_header(data)
            payload = self._recv_exact(header.size)
            reply = self._dispatch(header, payload, fds)
        except (vu.ProtocolError, DescriptorError, OSError, ValueError) as e:
            log.warning("cofs %s: vhost-user message refused: %s", self.tag, e)
            close_all(fds)
            return not isinstance(e, ConnectionError)
        if reply is not None:
            self._conn.sendall(vu.encode_reply(header.request, reply))
        elif header.need_reply:
            self._conn.sendall(vu.encode_reply(header.request, vu.encode_u64(0)))
        return True

    def _recv_exact(self, size: int) -> bytes:
        assert self._conn is not None
        chunks = []
        while size:
            chunk = self._conn.recv(size)
            if not chunk:
                raise ConnectionResetError("front end closed mid-message")
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _dispatch(self, header: vu.Header, payload: bytes, fds: list[int]) -> bytes | None:
        req = header.request
        if req == Request.GET_FEATURES:
            return vu.encode_u64(vu.VIRTIO_F_VERSION_1 | vu.VHOST_USER_F_PROTOCOL_FEATURES)
        if req == Request.GET_PROTOCOL_FEATURES:
            return vu.encode_u64(vu.PROTOCOL_F_CONFIG | vu.PROTOCOL_F_SLAVE_REQ)
        if req == Request.GET_QUEUE_NUM:
            return vu.encode_u64(NUM_QUEUES)
        if req == Request.GET_CONFIG:
            return vu.encode_config_reply(vu.decode_config_request(payload), self.config)
        if req == Request.SET_MEM_TABLE:
            regions = vu.decode_mem_table(payload)
            try:
                memory = GuestMemory.map(regions, fds)
            finally:
                close_all(fds)  # the mappings keep the memory
            for q in self._queues:
                if q.ring is not None:
                    q.ring.release()
                    q.ring = None
            if self._memory is not None:
                self._memory.close()
            self._memory = memory
            return None
        if req in (Request.SET_VRING_KICK, Request.SET_VRING_CALL, Request.SET_VRING_ERR):
            index, has_fd = vu.decode_vring_fd(payload)
            if has_fd != bool(fds) or len(fds) > 1:
                raise vu.ProtocolError(f"{Request(req).name} with {len(fds)} descriptors")
            queue = self._queue(index, fds)
            fd = fds[0] if fds else None
            if req == Request.SET_VRING_ERR:
                close_all((fd,))
            elif req == Request.SET_VRING_KICK:
                close_all((queue.kick,))
                queue.kick = fd
                if fd is not None:
                    os.set_blocking(fd, False)
            else:
                close_all((queue.call,))
                queue.call = fd
                if fd is not None:
                    os.set_blocking(fd, False)
            return None
        if req == Request.SET_SLAVE_REQ_FD:
            # Required by UML (see DESIGN.md); we never send it requests.
            close_all((self._slave_fd,))
            self._slave_fd = fds[0] if fds else None
            close_all(fds[1:])
            return None
        close_all(fds)
        if req in (Request.SET_VRING_NUM, Request.SET_VRING_BASE, Request.GET_VRING_BASE):
            index, num = vu.decode_vring_state(payload)
            queue = self._queue(index, [])
            if req == Request.SET_VRING_NUM:
                queue.size = num
            elif req == Request.SET_VRING_BASE:
                queue.base = num
            else:  # the front end stops the ring and asks where we were
                base = queue.ring.last_avail if queue.ring else queue.base
                queue.reset()
                return vu.encode_vring_state(index, base)
            return None
        if req == Request.SET_VRING_ADDR:
            addr = vu.decode_vring_addr(payload)
            queue = self._queue(addr.index, [])
            if queue.ring is not None:
                queue.ring.release()
                queue.ring = None
            queue.addr = addr
            return None
        if req in (
            Request.SET_OWNER, Request.RESET_OWNER, Request.SET_FEATURES,
            Request.SET_PROTOCOL_FEATURES, Request.SET_VRING_ENABLE, Request.SET_CONFIG,
        ):  # fmt: skip
            return None
        raise vu.ProtocolError(f"unsupported vhost-user request {req}")

    def _queue(self, index: int, fds: list[int]) -> _Queue:
        if not 0 <= index < NUM_QUEUES:
            close_all(fds)
            raise vu.ProtocolError(f"queue index {index}")
        return self._queues[index]

    # -- virtqueues and FUSE -------------------------------------------------------------

    def _ring(self, queue: _Queue) -> Virtqueue | None:
        if queue.ring is None and self._memory is not None and queue.addr and queue.size:
            queue.ring = Virtqueue(self._memory, size=queue.size, addr=queue.addr, base=queue.base)
        return queue.ring

    def _process(self, index: int) -> None:
        queue = self._queues[index]
        try:
            ring = self._ring(queue)
        except DescriptorError as e:
            log.warning("cofs %s: queue %d refused: %s", self.tag, index, e)
            return
        if ring is None:
            return
        pushed = False
        traced = log.isEnabledFor(logging.DEBUG)  # the debug collector follows requests
        timed = traced or self._stats is not None
        while True:
            try:
                head = ring.pop()
            except DescriptorError as e:
                log.warning("cofs %s: queue %d: %s", self.tag, index, e)
                break
            if head is None:
                break
            written: int | Callable[[], bytes] = 0
            try:
                chain = ring.chain(head)
                started = time.perf_counter_ns() if timed else 0
                written = self._request(chain)
                if timed:
                    spent = time.perf_counter_ns() - started
                    if self._stats is not None:
                        self._stats.op(chain, spent)
                    if traced:
                        _trace(chain, written, spent)
            except DescriptorError as e:
                log.warning("cofs %s: request refused: %s", self.tag, e)
            except Exception:
                log.exception("cofs %s: request failed", self.tag)
            if callable(written):  # on a worker thread: the chain goes back when it is done
                assert self._pool is not None
                self._pool.submit(self._work, index, ring, head, chain, written)
                continue
            ring.push(head, written)
            pushed = True
        if self._stats is not None:
            self._stats.answered = time.perf_counter_ns()
        if pushed and ring.wants_interrupt():
            signal(queue.call)

    # A request that may block for long (fsync) runs on a worker thread, so the
    # guest's other requests go on meanwhile; FUSE replies need not come in order.

    def _work(
        self, index: int, ring: Virtqueue, head: int, chain: Chain, work: Callable[[], bytes]
    ) -> None:
        try:
            reply = work()
        except Exception:
            log.exception("cofs %s: request failed", self.tag)
            reply = b""
        self._finished.append((index, ring, head, chain, reply))
        signal(self._done)

    def _complete(self) -> None:
        """Hand back the chains whose work the workers finished."""
        calls = set()
        while self._finished:
            index, ring, head, chain, reply = self._finished.popleft()
            queue = self._queues[index]
            if queue.ring is not ring:
                continue  # the guest reset the queue meanwhile: the request is gone
            if len(reply) > chain.writable_size:
                reply = b""
            ring.push(head, chain.write(reply))
            if ring.wants_interrupt():
                calls.add(index)
        for index in calls:
            signal(self._queues[index].call)

    def _request(self, chain: Chain) -> int | Callable[[], bytes]:
        """Serve one FUSE request: the number of bytes written into the chain, or the
        blocking rest of the work, which returns the reply."""
        assert self._fs is not None
        size = chain.readable_size
        if size > MAX_REQUEST:
            raise DescriptorError(f"a request of more than {MAX_REQUEST} bytes")
        req = None
        first = chain.readable[0] if chain.readable else b""
        if len(first) >= 8 and first[4:8] == _WRITE and size >= fp.WRITE_HEAD_SIZE:
            # A WRITE's data goes from guest memory straight to the host file.
            head = chain.read_prefix(fp.WRITE_HEAD_SIZE)
            with contextlib.suppress(fp.FuseProtocolError):  # decoded again below, refused
                views = chain.readable_views(fp.WRITE_HEAD_SIZE, size - fp.WRITE_HEAD_SIZE)
                req = fp.decode_write_head(head, size, views)
        if req is None:
            data = chain.read_all(MAX_REQUEST)
            try:
                req = fp.decode_request(data)
            except fp.FuseProtocolError as e:
                log.warning("cofs %s: FUSE request refused: %s", self.tag, e)
                if len(data) >= fp.IN_HEADER.size and chain.writable_size >= fp.OUT_HEADER.size:
                    unique = int.from_bytes(data[8:16], "little")
                    return chain.write(fp.encode_error(unique, errno.EINVAL))
                return 0
        if req.header.opcode == fp.Opcode.READ:
            return self._read(chain, req)
        work = self._fs.slow(req)
        if work is not None:
            return work
        reply = self._fs.handle(req)
        if reply is None:
            return 0
        if len(reply) > chain.writable_size:
            reply = fp.encode_error(req.header.unique, errno.EOVERFLOW)
        return chain.write(reply)

    def _read(self, chain: Chain, req: fp.Request) -> int:
        """FUSE_READ: file data goes straight from the host file into guest memory."""
        assert self._fs is not None
        a: fp.ReadIn = req.args
        head = fp.OUT_HEADER.size
        size = min(a.size, chain.writable_size - head)
        if size < 0:
            return 0
        try:
            n = self._fs.read_into(
                req.header.nodeid, a.fh, a.offset, chain.writable_views(head, size)
            )
        except OSError as e:
            return chain.write(fp.encode_error(req.header.unique, e.errno or errno.EIO))
        chain.write(fp.encode_out_header(req.header.unique, 0, n))
        return head + n


def _trace(chain: Chain, written: int | Callable[[], bytes], spent: int) -> None:
    """One request as a debug event: opcode, node, result and the server's time."""
    head = chain.read_prefix(24)
    if len(head) < 24:
        return
    name = _opcode_name(head)
    fields: dict[str, object] = {
        "opcode": name, "unique": int.from_bytes(head[8:16], "little"),
        "node": int.from_bytes(head[16:24], "little"), "us": round(spent / 1000, 1),
    }  # fmt: skip
    if callable(written):
        fields["result"] = "on a worker thread"
    elif written >= fp.OUT_HEADER.size:
        error = int.from_bytes(b"".join(chain.writable_views(4, 4)), "little", signed=True)
        fields["result"] = "ok" if error == 0 else errno.errorcode.get(-error, str(error))
    else:
        fields["result"] = "no reply"
    log.debug("%s %s", name, fields["result"], extra={"fields": fields})


def _opcode_name(head: bytes) -> str:
    """The opcode of the request whose header starts with ``head``, by name if known."""
    code = int.from_bytes(head[4:8], "little")
    try:
        return fp.Opcode(code).name
    except ValueError:
        return str(code)
