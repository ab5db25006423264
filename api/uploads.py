"""An uploaded batch file, parsed as it streams in, with every cap enforced on the way.

``receive_upload`` reads a ``multipart/form-data`` body chunk by chunk (python-multipart's
streaming parser, the one Starlette uses, without Starlette's spooling of whole parts), and
refuses, as soon as the offending byte arrives:

* more parts than ``max_parts``, a part's headers over ``max_header_bytes``, a plain field over
  ``max_field_bytes``, a second file, a file over ``max_bytes``;
* for a ``.tar.gz``: an archive that inflates beyond ``max_inflated`` bytes, or more than
  ``max_ratio`` times the compressed bytes received so far (past ``RATIO_FLOOR_BYTES``: a
  decompression bomb is refused after a few MB of inflation, not after a GB), or that holds
  more than ``max_members`` members.  Inflated bytes are counted and dropped, never kept.

Parsing, writing and inflating run in a thread of the caller's executor, one piece (about
``PIECE_BYTES``) at a time: the event loop only moves bytes.
"""

from __future__ import annotations

import asyncio
import shutil
import zlib
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header

from api.errors import ApiError
from api.inputs import upload_name

#: Received bytes handed to the parsing thread at once.
PIECE_BYTES = 1 << 20
#: Inflated bytes produced per zlib call (bounds the memory one call can take).
INFLATE_STEP = 1 << 20
#: Below this many inflated bytes the ratio is not judged (small archives compress well).
RATIO_FLOOR_BYTES = 64 << 20
TAR_BLOCK = 512


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may hold."""

    max_bytes: int = 100 << 20
    max_inflated: int = 1 << 30
    max_ratio: int = 20
    max_members: int = 200_000
    max_parts: int = 4
    max_field_bytes: int = 1024
    max_header_bytes: int = 8192


@dataclass
class Upload:
    """A file received in full: where it lies, its name as sent, the plain fields."""

    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


class TarMembers:
    """Counts the members of a tar stream from its 512-byte headers, skipping their data."""

    def __init__(self, limit: int) -> None:
        self.limit, self.count = limit, 0
        self._header = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> None:
        view, i = memoryview(data), 0
        while i < len(view):
            if self._skip:
                step = min(self._skip, len(view) - i)
                self._skip -= step
                i += step
                continue
            take = min(TAR_BLOCK - len(self._header), len(view) - i)
            self._header += view[i : i + take]
            i += take
            if len(self._header) < TAR_BLOCK:
                continue
            header = bytes(self._header)
            self._header.clear()
            if not any(header):  # end-of-archive blocks
                continue
            self.count += 1
            if self.count > self.limit:
                raise ApiError(413, f"archive holds more than {self.limit:,} members")
            size = _tar_size(header[124:136])
            self._skip = -(-size // TAR_BLOCK) * TAR_BLOCK


def _tar_size(raw: bytes) -> int:
    if raw[0] & 0x80:  # GNU base-256
        return int.from_bytes(bytes([raw[0] & 0x7F]) + raw[1:], "big")
    digits = raw.split(b"\0", 1)[0].strip()
    try:
        return int(digits or b"0", 8)
    except ValueError as exc:
        raise ApiError(422, "the archive is not a tar file (unreadable member header)") from exc


class Inflation:
    """What a gzip stream inflates to, judged as the compressed bytes arrive."""

    def __init__(self, limits: UploadLimits) -> None:
        self.limits = limits
        self.compressed = self.inflated = 0
        self.members = TarMembers(limits.max_members)
        self._zlib = zlib.decompressobj(wbits=31)

    def feed(self, data: bytes) -> None:
        self.compressed += len(data)
        pending = data
        while pending:
            try:
                out = self._zlib.decompress(pending, INFLATE_STEP)
            except zlib.error as exc:
                raise ApiError(422, f"the archive is not valid gzip: {exc}") from exc
            self._count(out)
            pending = self._zlib.unconsumed_tail
            if self._zlib.eof:  # another gzip member may follow
                pending = self._zlib.unused_data + pending
                self._zlib = zlib.decompressobj(wbits=31)

    def _count(self, out: bytes) -> None:
        self.inflated += len(out)
        limits = self.limits
        if self.inflated > limits.max_inflated:
            raise ApiError(413, f"the archive inflates beyond {limits.max_inflated:,} bytes")
        if self.inflated > max(RATIO_FLOOR_BYTES, limits.max_ratio * self.compressed):
            raise ApiError(
                413,
                f"the archive inflates more than {limits.max_ratio}x its size "
                "(a decompression bomb?)",
            )
        self.members.feed(out)


class _Receiver:
    """The multipart parser's callbacks; called from one thread at a time."""

    def __init__(self, boundary: bytes, folder: Path, limits: UploadLimits) -> None:
        self.folder, self.limits = folder, limits
        self.parts = 0
        self.fields: dict[str, str] = {}
        self.upload: Upload | None = None
        self._headers: dict[str, str] = {}
        self._field: bytes = b""
        self._value: bytes = b""
        self._current: str | None = None  # "file", a field name, or None (ignored part)
        self._fh: IO[bytes] | None = None
        self._inflation: Inflation | None = None
        self._error: ApiError | None = None
        self.parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
            },
            max_header_count=8,
            max_header_size=limits.max_header_bytes,
        )

    def write(self, data: bytes) -> None:
        try:
            self.parser.write(data)
        except ApiError:
            raise
        except Exception as exc:  # python-multipart's own errors: a malformed body
            raise ApiError(400, f"malformed multipart body: {exc}") from exc

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    # -- callbacks --------------------------------------------------------------------------
    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise ApiError(413, f"at most {self.limits.max_parts} parts per upload")
        self._headers, self._field, self._value = {}, b"", b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if name == "file" and filename is not None:
            if self.upload is not None:
                raise ApiError(422, "one file per upload")
            sent = filename.decode("utf-8", "replace")
            path = self.folder / upload_name(sent)
            self.upload = Upload(path, sent, 0)
            self._fh = path.open("wb")
            if path.name.lower().endswith((".tar.gz", ".tgz")):
                self._inflation = Inflation(self.limits)
            self._current = "file"
        elif filename is None and name:
            self._current, self.fields[name] = name, ""
        else:
            self._current = None  # another file field: read past, never stored

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._current == "file":
            assert self.upload is not None and self._fh is not None
            self.upload.size += len(chunk)
            if self.upload.size > self.limits.max_bytes:
                raise ApiError(413, f"file over the limit of {self.limits.max_bytes:,} bytes")
            self._fh.write(chunk)
            if self._inflation is not None:
                self._inflation.feed(chunk)
        elif self._current is not None:
            value = self.fields[self._current] + chunk.decode("utf-8", "replace")
            if len(value) > self.limits.max_field_bytes:
                raise ApiError(413, f"form field {self._current!r} is too long")
            self.fields[self._current] = value

    def _part_end(self) -> None:
        if self._current == "file":
            self.close()
        self._current = None


async def receive_upload(
    content_type: str | None,
    body: AsyncIterator[bytes],
    folder: Path,
    limits: UploadLimits,
    executor: Executor,
) -> Upload:
    """Stream a multipart body into ``folder``; ApiError (4xx) on the first cap crossed."""
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "upload the file as multipart/form-data (curl -F file=@reviews.csv)")
    receiver = _Receiver(boundary, folder, limits)
    loop = asyncio.get_running_loop()
    piece: list[bytes] = []
    size = 0
    try:
        async for chunk in body:
            piece.append(chunk)
            size += len(chunk)
            if size >= PIECE_BYTES:
                await loop.run_in_executor(executor, receiver.write, b"".join(piece))
                piece, size = [], 0
        if piece:
            await loop.run_in_executor(executor, receiver.write, b"".join(piece))
        receiver.parser.finalize()
    except BaseException:
        receiver.close()
        shutil.rmtree(folder, ignore_errors=True)
        raise
    receiver.close()
    if receiver.upload is None:
        shutil.rmtree(folder, ignore_errors=True)
        raise ApiError(422, "missing file part 'file' (curl -F file=@reviews.csv)")
    return receiver.upload


def describe(limits: UploadLimits) -> dict[str, Any]:
    """The caps, for the OpenAPI description and the docs."""
    return {
        "max_bytes": limits.max_bytes,
        "max_inflated": limits.max_inflated,
        "max_ratio": limits.max_ratio,
        "max_members": limits.max_members,
    }
