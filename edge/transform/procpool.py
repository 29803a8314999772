"""Worker processes driven from the event loop: one socket pair each, no helper threads.

`concurrent.futures.ProcessPoolExecutor` moves every job through two threads of this
process (a feeder that pickles and writes it, a manager that reads the answer), which
take the GIL from the event loop three times a job, and it breaks for good when one
worker dies: every later job raises `BrokenProcessPool`. Here the event loop writes
each job to a worker's socket and a task per worker reads the answers; a worker that
dies fails only the job it was running (those queued behind it go to other workers),
and the next job starts a new process.

A job is `fn(*args)`, pickled (so `fn` must be importable by name in the worker); its
return value or exception comes back pickled. An answer is a 4-byte length and a
pickle. A job is a head (the pickle's length, how many out-of-band buffers, their
lengths), the pickle, then those buffers: a `bytes` argument of `OUT_OF_BAND` or more
(a source image) is written to the socket as it is and reaches `fn` as a read-only
memoryview of the worker's receive buffer, valid for that call. Pickled in band, a
350 KB source cost the edge 370 us of copying per job and a 3.9 MB one 2.6 ms, more
than the socket write itself.
"""

from __future__ import annotations

import asyncio
import collections
import multiprocessing
import pickle
import signal
import socket
import struct
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
FRAME = struct.Struct("!I")  # an answer's length
JOB = struct.Struct("!II")  # a job's pickle length and its number of out-of-band buffers
BUFFER = struct.Struct("!Q")  # an out-of-band buffer's length
OUT_OF_BAND = 64 * 1024
KEEP_BUFFER = 32 * 1024 * 1024  # a worker keeps a receive buffer up to this size
# a job's source crosses in one or two writes instead of one per ~200 KB of the default
# buffer, each a trip through the event loop: a 3.9 MB source cost the edge 11 ms of CPU
# per job with the default, 3.3 ms with this (the kernel caps it at net.core.wmem_max)
SOCKET_BUFFER = 4 * 1024 * 1024


class WorkerDied(Exception):
    """The worker process running a job ended before answering."""

    def __init__(self, exitcode: int | None) -> None:
        self.exitcode = exitcode
        super().__init__(f"transform worker ended with exit code {exitcode}")

    @property
    def signal(self) -> int | None:
        """The signal that killed it (SIGKILL from the OOM killer, SIGSEGV...), if any."""
        return -self.exitcode if self.exitcode is not None and self.exitcode < 0 else None


class ProcessPool:
    """At most `size` worker processes, started on demand (spawned, not forked: the event
    loop's threads and sockets stay out of them) and kept while they live. Each takes up
    to `depth` jobs at once and runs them in turn: with 2, a worker's next job is already
    in its socket when one ends, so it never waits for the event loop between jobs (which
    must first get a core back from the workers to hand out the next one)."""

    def __init__(self, size: int, initializer: Callable[[], None], depth: int = 1) -> None:
        self.size = size
        self.depth = depth
        self._initializer = initializer
        self._workers: list[_Worker] = []
        self._starting = 0
        self._room = asyncio.Event()  # set when a job ends: a worker may have room
        self._context = multiprocessing.get_context("spawn")

    async def run(self, fn: Callable[..., T], *args: object, deadline: float | None = None) -> T:
        """`fn(*args)` in a worker. Cancelling the caller does not cancel the job: the
        worker finishes it (a process cannot be interrupted safely mid-call) and goes on
        with the next. A job queued behind one that killed its worker runs in another.
        Past `deadline` (monotonic) TimeoutError: a job that is running then is stopped
        by killing its process (jobs queued behind it go to other workers); one still
        queued behind another job is left to run."""
        # pickled before a worker is taken: a job that cannot be sent costs no worker
        frames = _job_frames(fn, args)
        while True:
            worker = await self._take()
            if not worker.jobs and not worker.process.is_alive():
                # ended while idle (the OOM killer, a signal) before its socket said so: a
                # waitpid (microseconds) spares this job a WorkerDied it did not earn
                self._ended(worker, False)
                continue
            answer = worker.send(frames)
            try:
                if deadline is None:
                    ok, value = await asyncio.shield(answer)
                else:
                    ok, value = await _within(answer, deadline)
            except _NotStarted:
                continue
            except TimeoutError:
                answer.add_done_callback(_retrieve)
                if worker.jobs and worker.jobs[0] is answer:
                    worker.stop()
                raise
            if ok:
                return value  # type: ignore[no-any-return]
            raise value

    async def _take(self) -> _Worker:
        while True:
            least = min(self._workers, key=lambda worker: len(worker.jobs), default=None)
            if least is not None and not least.jobs:
                return least
            if len(self._workers) + self._starting < self.size:
                self._starting += 1
                try:
                    worker = await _Worker.start(self._context, self._initializer, self._ended)
                finally:
                    self._starting -= 1
                self._workers.append(worker)
                self._room.set()  # callers waiting meanwhile may queue behind its first job
                return worker
            if least is not None and len(least.jobs) < self.depth:
                return least
            self._room.clear()
            await self._room.wait()

    def _ended(self, worker: _Worker, alive: bool) -> None:
        """A worker answered a job (`alive`) or its socket closed."""
        if not alive and worker in self._workers:
            self._workers.remove(worker)
        self._room.set()

    def close(self) -> None:
        for worker in self._workers:
            worker.kill()
        self._workers.clear()


class _NotStarted(Exception):
    """The job was queued behind one that ended its worker: it never ran."""


class _Worker:
    """A process and its socket: jobs go down it in order, and a task reads the answers
    back in the same order."""

    def __init__(
        self,
        process: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        ended: Callable[[_Worker, bool], None],
    ) -> None:
        self.process = process
        self.reader = reader
        self.writer = writer
        # answers to jobs sent and not answered yet, oldest first (a retry of a job that
        # never started is its caller's: `run` keeps the frames)
        self.jobs: collections.deque[asyncio.Future[tuple[bool, Any]]] = collections.deque()
        self._ended = ended
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def start(
        cls, context: Any, initializer: Callable[[], None], ended: Callable[[_Worker, bool], None]
    ) -> _Worker:
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            end.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
        with theirs:
            process = context.Process(target=_serve, args=(theirs, initializer), daemon=True)
            process.start()
        reader, writer = await asyncio.open_connection(sock=ours)
        return cls(process, reader, writer, ended)

    def send(self, frames: list[bytes | memoryview]) -> asyncio.Future[tuple[bool, Any]]:
        """Queue a job; the future gets (ok, value), or WorkerDied / _NotStarted."""
        answer: asyncio.Future[tuple[bool, Any]] = asyncio.get_running_loop().create_future()
        self.jobs.append(answer)
        # whole frames, in order, without an await between: the transport keeps what the
        # socket cannot take yet (at most `depth` jobs per worker are ever in it)
        self.writer.writelines(frames)
        return answer

    async def _read(self) -> None:
        try:
            while True:
                (size,) = FRAME.unpack(await self.reader.readexactly(FRAME.size))
                data = await self.reader.readexactly(size)
                answer = self.jobs.popleft()
                try:
                    answer.set_result(pickle.loads(data))  # noqa: S301 - our own worker, over a private socket pair
                except Exception as exc:  # an answer this process cannot unpickle
                    answer.set_exception(exc)
                self._ended(self, True)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        # the process ended: the job at the head was running, those behind it never started
        self._ended(self, False)
        self.writer.close()
        running = self.jobs.popleft() if self.jobs else None
        for answer in self.jobs:
            answer.set_exception(_NotStarted())
        self.jobs.clear()
        try:
            await asyncio.to_thread(self.process.join, 5)
        finally:  # cancelled by the pool's close: the caller must not wait forever
            if running is not None:
                running.set_exception(WorkerDied(self.process.exitcode))

    def stop(self) -> None:
        """End the process now (its running job is past its deadline): the reading task
        sees the end, fails the running job and sends the queued ones elsewhere."""
        if self.process.is_alive():
            self.process.kill()

    def kill(self) -> None:
        # the callers' answers are cancelled here, not by the reading task: a task
        # cancelled before its first step never runs its own handlers
        for answer in self.jobs:
            answer.cancel()
        self.jobs.clear()
        self._reading.cancel()
        self.writer.close()
        if self.process.is_alive():
            self.process.kill()


async def _within(answer: asyncio.Future[tuple[bool, Any]], deadline: float) -> tuple[bool, Any]:
    remaining = deadline - time.monotonic()
    async with asyncio.timeout(max(0.0, remaining)):
        return await asyncio.shield(answer)


def _retrieve(answer: asyncio.Future[tuple[bool, Any]]) -> None:
    if not answer.cancelled():
        answer.exception()  # retrieved: nobody awaits an abandoned job's answer


def _job_frames(fn: Callable[..., object], args: tuple[object, ...]) -> list[bytes | memoryview]:
    """What goes down the socket for `fn(*args)`: head, pickle, out-of-band buffers."""
    wrapped = tuple(
        pickle.PickleBuffer(arg) if type(arg) is bytes and len(arg) >= OUT_OF_BAND else arg
        for arg in args
    )
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps((fn, wrapped), protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    head = JOB.pack(len(payload), len(raws)) + b"".join(BUFFER.pack(raw.nbytes) for raw in raws)
    return [head, payload, *raws]


def _serve(sock: socket.socket, initializer: Callable[[], None]) -> None:
    """A worker's loop: read a job, run it, write the answer; end when the edge closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the edge, which ends us
    initializer()
    # jobs are read into one buffer kept across jobs (grown to the largest so far): a
    # new one per job cost its size in page faults each time, 2,500 for a 10 MB source
    buffer = bytearray(JOB.size)
    with sock:
        while True:
            head = _receive(sock, memoryview(buffer), JOB.size)
            if head is None:
                return  # the edge closed its end
            size, count = JOB.unpack(head)
            sizes: list[int] = []
            if count:
                room = BUFFER.size * count
                lengths = _receive(sock, memoryview(bytearray(room)), room)
                if lengths is None:
                    return
                sizes = [length for (length,) in BUFFER.iter_unpack(lengths)]
            total = size + sum(sizes)
            if total > len(buffer):
                buffer = bytearray(total)
            view = _receive(sock, memoryview(buffer), total)
            if view is None:
                return
            views, start = [], size
            for length in sizes:
                views.append(view[start : start + length].toreadonly())
                start += length
            fn, args = pickle.loads(view[:size], buffers=views)  # noqa: S301 - from the edge that started us
            try:
                answer = (True, fn(*args))
            except Exception as exc:
                answer = (False, exc)
            del fn, args, view, views
            if len(buffer) > KEEP_BUFFER:
                buffer = bytearray(JOB.size)  # a rare huge source: its room is not kept
            try:
                data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                data = pickle.dumps((False, RuntimeError(f"answer cannot be sent: {exc!r}")))
            del answer
            try:
                sock.sendall(FRAME.pack(len(data)) + data)
            except BrokenPipeError:
                return  # the edge is gone


def _receive(sock: socket.socket, buffer: memoryview, size: int) -> memoryview | None:
    """Exactly `size` bytes into the start of `buffer`; None at the end of the stream."""
    done = 0
    while done < size:
        got = sock.recv_into(buffer[done:size])
        if not got:
            return None
        done += got
    return buffer[:size]
