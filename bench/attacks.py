"""Hostile clients of the HTTP API, replayed against a real ``sentiment-api`` process.

Shared by ``bench/abuse.py`` (what each attack costs, before and after) and
``tests/api/test_trust.py`` (that each is refused): raw sockets where a polite HTTP client would
not misbehave, and readings of the server's own ``/proc`` entries for memory, CPU and threads.
"""

from __future__ import annotations

import io
import os
import socket
import tarfile
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BOUNDARY = "attackboundary7d3f"
CHUNK = 1 << 20


@dataclass(frozen=True)
class Usage:
    """A process's resident memory (MB), CPU seconds and threads at one moment."""

    rss_mb: float
    cpu_s: float
    threads: int


def usage(pid: int) -> Usage:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kb = int(fields["VmRSS"].split()[0])
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime, stime
    return Usage(rss_kb / 1024, cpu, int(fields["Threads"]))


def files_under(folder: Path) -> int:
    """Bytes of the regular files under ``folder`` (what a process left on disk)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


class Peak:
    """The highest RSS (MB) of a process and the most bytes under a folder, sampled every 20 ms
    while a ``with`` block runs (what a transient spool to disk or in memory cost)."""

    def __init__(self, pid: int, folder: Path) -> None:
        self.pid, self.folder = pid, folder
        self.rss_mb = self.disk_bytes = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.rss_mb = max(self.rss_mb, usage(self.pid).rss_mb)
                self.disk_bytes = max(self.disk_bytes, files_under(self.folder))
            except (OSError, ValueError):  # a file vanished while summed: sample again
                continue

    def __enter__(self) -> Peak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def field_parts(size: int) -> Iterator[bytes]:
    """``size`` bytes of plain form fields of 1 MB each (no file name): what a multipart parser
    keeps in memory rather than on disk."""
    for i, block in enumerate(zeros(size)):
        head = f'\r\n--{BOUNDARY}\r\nContent-Disposition: form-data; name="f{i:05d}"\r\n\r\n'
        yield head.encode() + block


def _part_head(filename: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()


def _part_tail() -> bytes:
    return f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(
    port: int,
    pieces: Iterator[bytes],
    size: int,
    filename: str = "reviews.txt",
    token: str | None = None,
    timeout: float = 120.0,
) -> tuple[int | None, bytes]:
    """POST a multipart upload of ``size`` bytes (from ``pieces``) to ``/v1/batches`` on a raw
    socket, sending until the server answers or closes; the status and the answer's body."""
    head, tail = _part_head(filename), _part_tail()
    headers = [
        "POST /v1/batches HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        f"Content-Length: {len(head) + size + len(tail)}",
    ]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    answer = bytearray()
    try:
        sock.sendall(("\r\n".join(headers) + "\r\n\r\n").encode() + head)
        sock.setblocking(False)
        for piece in [*pieces, tail]:
            view = memoryview(piece)
            while view:
                try:
                    sent = sock.send(view)
                    view = view[sent:]
                except BlockingIOError:
                    if _answered(sock, answer):
                        raise StopIteration from None
                    time.sleep(0.005)
    except (StopIteration, BrokenPipeError, ConnectionResetError):
        pass
    finally:
        sock.setblocking(True)
        sock.settimeout(timeout)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
                if _complete(answer):
                    break
        except (ConnectionResetError, TimeoutError):
            pass
        sock.close()
    return _status(bytes(answer)), bytes(answer).partition(b"\r\n\r\n")[2]


def _answered(sock: socket.socket, answer: bytearray) -> bool:
    try:
        chunk = sock.recv(65536)
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    answer += chunk
    return not chunk or _complete(answer)


def _complete(answer: bytearray) -> bool:
    head, sep, body = bytes(answer).partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return False


def _status(answer: bytes) -> int | None:
    first = answer.split(b"\r\n", 1)[0].split()
    return int(first[1]) if len(first) > 1 and first[1].isdigit() else None


def zeros(size: int) -> Iterator[bytes]:
    """``size`` bytes of an ordinary text-looking upload, in 1 MB pieces."""
    line = b"A fine film, worth seeing twice.\n"
    block = line * (CHUNK // len(line)) + b"x" * (CHUNK % len(line))
    left = size
    while left > 0:
        yield block[: min(CHUNK, left)]
        left -= CHUNK


def concurrent_uploads(
    port: int, n: int, size: int, token: str | None = None, fields: bool = False
) -> list[int | None]:
    """``n`` uploads of ``size`` bytes at once (a file, or ``fields``: 1 MB form fields); their
    statuses."""
    statuses: list[int | None] = [None] * n
    overhead = len(next(field_parts(1))) - 1 if fields else 0

    def one(i: int) -> None:
        pieces = field_parts(size) if fields else zeros(size)
        statuses[i] = upload(port, pieces, size + overhead * (size >> 20), token=token)[0]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def gzip_bomb(inflated: int) -> bytes:
    """An aclImdb-looking ``.tar.gz`` of a few hundred KB that inflates to ``inflated`` bytes:
    one member of zeros."""
    info = tarfile.TarInfo("aclImdb/test/pos/0_10.txt")
    info.size = inflated
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    squeeze = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = io.BytesIO()
    out.write(squeeze.compress(header))
    block = bytes(CHUNK)
    left = inflated
    while left > 0:
        out.write(squeeze.compress(block[: min(CHUNK, left)]))
        left -= CHUNK
    out.write(squeeze.flush())
    return out.getvalue()


def trickle_headers(port: int, seconds: float) -> float:
    """Open a connection, send half a request line and nothing more; how long the server kept
    the connection open (up to ``seconds``)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    started = time.monotonic()
    try:
        sock.sendall(b"GET /healthz HT")
        while sock.recv(1024):
            pass
    except TimeoutError:
        pass
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.monotonic() - started


def trickle_body(port: int, token: str, seconds: float) -> tuple[int | None, float]:
    """A POST that announces 1,000 body bytes and sends 10; the status and when it came."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=seconds)
    started = time.monotonic()
    answer = bytearray()
    try:
        sock.sendall(
            (
                "POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {token}\r\nContent-Length: 1000\r\n\r\n"
            ).encode()
            + b'{"review":'
        )
        while chunk := sock.recv(65536):
            answer += chunk
            if _complete(answer):
                break
    except (TimeoutError, ConnectionResetError):
        pass
    finally:
        sock.close()
    return _status(bytes(answer)), time.monotonic() - started


def open_idle(port: int, n: int) -> tuple[int, list[socket.socket]]:
    """Open ``n`` idle connections; how many the server closed at once (and the sockets)."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(n)]
    time.sleep(0.5)
    closed = 0
    for sock in socks:
        sock.setblocking(False)
        try:
            if sock.recv(1) == b"":
                closed += 1
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed, socks


def open_stream(port: int, path: str, token: str) -> socket.socket:
    """Start a GET (a batch's results) and read only its first bytes: a client that walks
    away without closing.  The caller closes the socket."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    sock.recv(64)
    return sock
