"""``/v1/batches``: upload a file, follow its progress, stream its results.

An upload is read as it streams in, under every cap of ``api.uploads``; once it is whole, the
answer (202) comes at once with the batch id, and the batch is *prepared* (read twice, planned,
enqueued: ``shared.batches.submit``) on a thread of its own, off the request path and off the
pool that serves other requests.  At most ``max_preparing`` uploads are received or prepared at
once; more are refused with 503 before their body is read.

A batch belongs to its token: its id is random (nothing about the input reveals it), its owner is
recorded with it, and any other token gets 404 for it.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from api import metrics, results
from api.config import ApiSettings
from api.errors import ApiError
from api.progress import batch_meta, batch_progress
from api.uploads import receive_upload
from shared import batches
from shared.config import Settings
from shared.datasets import DataError, sniff
from shared.output import RowFormat
from shared.queues import QUEUE_BULK
from shared.report import BatchReport
from shared.schema import MAX_TOP_WORDS

log = structlog.get_logger(__name__)


async def caller(request: Request) -> str:
    """The calling token's name (set by ``api.guard`` before the request got here); async, so
    FastAPI does not send it to a thread for each request."""
    return str(request.scope["caller"])


class Batches:
    """The routes and what they share: Redis clients, the upload folder, the two executors."""

    def __init__(self, settings: Settings, api: ApiSettings, state: dict[str, Any]) -> None:
        self.settings, self.api, self.state = settings, api, state
        self.uploads = Path(tempfile.mkdtemp(prefix="sentiment-api-"))
        # Parsing and inflating uploads; preparing batches: each its own threads, so neither
        # can starve the other nor the default pool that serves feedback and readiness.
        self.receiving = ThreadPoolExecutor(api.max_preparing, thread_name_prefix="upload")
        self.preparing = ThreadPoolExecutor(api.max_preparing, thread_name_prefix="batch-prep")
        self.slots = asyncio.Semaphore(api.max_preparing)
        # Reports wait for a batch's jobs: their own threads, never a preparing slot.
        self.reporting = ThreadPoolExecutor(2, thread_name_prefix="batch-report")
        self.router = APIRouter(tags=["batches"])
        self.router.add_api_route(
            "/v1/batches", self.create, methods=["POST"], status_code=202, openapi_extra=_UPLOAD
        )
        self.router.add_api_route("/v1/batches/{batch_id}", self.status, methods=["GET"])
        self.router.add_api_route("/v1/batches/{batch_id}/results", self.results, methods=["GET"])
        self.router.add_api_route(
            "/v1/batches/{batch_id}/report",
            self.report,
            methods=["GET"],
            response_class=HTMLResponse,
        )

    def close(self) -> None:
        self.receiving.shutdown(wait=False, cancel_futures=True)
        self.preparing.shutdown(wait=True, cancel_futures=True)
        self.reporting.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(self.uploads, ignore_errors=True)

    async def create(
        self,
        request: Request,
        top_words: int | None = Query(None, ge=0, le=MAX_TOP_WORDS),
        sentences: bool = Query(False, description="answer every sentence too (and targets)"),
        name: str = Depends(caller),
    ) -> dict[str, Any]:
        """Upload a file (``curl -F file=@reviews.csv``) in any format ``sentiment-enqueue``
        reads: text lines, CSV, JSONL, an aclImdb ``.tar.gz``.  Answers at once with the batch
        id; its reviews go on the bulk queue while ``status_url`` shows the progress."""
        if self.slots.locked():
            raise ApiError(
                503, "busy preparing other batches; retry shortly", {"Retry-After": "10"}
            )
        await self.slots.acquire()
        folder = Path(tempfile.mkdtemp(dir=self.uploads))
        loop = asyncio.get_running_loop()
        try:
            upload = await receive_upload(
                request.headers.get("content-type"),
                request.stream(),
                folder,
                self.api.upload,
                self.receiving,
            )
            try:
                await loop.run_in_executor(self.receiving, sniff, upload.path)
            except DataError as exc:
                raise ApiError(422, f"{upload.filename or 'file'}: {exc.reason}") from exc
        except BaseException:
            self._done(folder)
            raise
        batch_id = batches.new_batch_id()
        key = batches.BATCH_KEY.format(batch_id)
        aconn = self.state["client"].aconn
        async with aconn.pipeline() as pipe:
            pipe.hset(key, mapping={"owner": name, "state": "preparing", "at": time.time()})
            pipe.expire(key, self.settings.result_ttl)
            await pipe.execute()
        options = batches.Options.from_settings(
            self.settings,
            top_words=self.api.top_words if top_words is None else top_words,
            queue=QUEUE_BULK,
            sentences=sentences,
        )
        future = loop.run_in_executor(
            self.preparing, self._prepare, batch_id, upload.path, upload.filename, options, name
        )
        future.add_done_callback(lambda _: self._done(folder))
        log.info("batch_received", batch_id=batch_id, caller=name, bytes=upload.size)
        return {
            "batch_id": batch_id,
            "state": "preparing",
            "status_url": f"/v1/batches/{batch_id}",
            "results_url": f"/v1/batches/{batch_id}/results",
            "report_url": f"/v1/batches/{batch_id}/report",
        }

    def _done(self, folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)
        self.slots.release()

    def _prepare(
        self, batch_id: str, path: Path, filename: str, options: batches.Options, owner: str
    ) -> None:
        """Read, plan and enqueue an upload (a preparation thread); a failure is recorded."""
        conn = self.state["conn"]
        key = batches.BATCH_KEY.format(batch_id)
        try:
            info = batches.submit(
                conn, batches.file_source([path]), options, False, batch_id=batch_id, owner=owner
            )
            metrics.BATCH_ROWS.inc(info.rows)
        except DataError as exc:
            conn.hset(key, mapping={"state": "failed", "error": f"{filename}: {exc.reason}"})
        except Exception as exc:  # recorded for the owner; the details stay in the log
            log.exception("batch_preparation_failed", batch_id=batch_id, reason=repr(exc))
            conn.hset(key, mapping={"state": "failed", "error": "the batch could not be prepared"})

    async def status(self, batch_id: str, name: str = Depends(caller)) -> dict[str, Any]:
        """How far a batch is: preparing, failed, or ready with jobs ended and rows answered."""
        return await batch_progress(self.state["client"].aconn, batch_id, name)

    async def report(self, batch_id: str, name: str = Depends(caller)) -> HTMLResponse:
        """An HTML summary of the batch (``shared.report``): verdict shares with a chart, the
        most frequent opinion targets with their counts and examples, the words that drove
        each side.  Waits at most ``API_RESULTS_WAIT_S`` for the batch's jobs."""
        meta = await batch_meta(self.state["client"].aconn, batch_id, name)
        if meta.get("state") == "failed":
            raise ApiError(422, meta.get("error") or "the batch could not be prepared")
        if meta.get("state") != "ready":
            raise ApiError(503, "the batch is still being prepared", {"Retry-After": "10"})

        def build() -> str:
            summary = BatchReport(f"Batch {batch_id}")
            rows = batches.results(
                self.state["conn"], batch_id, self.api.results_wait_s, False, texts=True
            )
            for row in rows:
                summary.add(row, row.pop("_text", None))
            return summary.html()

        page = await asyncio.get_running_loop().run_in_executor(self.reporting, build)
        return HTMLResponse(
            page,
            headers={"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"},
        )

    async def results(
        self,
        batch_id: str,
        format: str = Query("jsonl", pattern="^(jsonl|csv)$"),
        name: str = Depends(caller),
    ) -> StreamingResponse:
        """One line per input line (CSV: one record), in input order, streamed as jobs end:
        exactly ``sentiment-enqueue``'s output for the same file.  Waits at most
        ``API_RESULTS_WAIT_S`` (rows not answered by then say so; GET again later)."""
        aconn = self.state["client"].aconn
        deadline = time.monotonic() + self.api.results_wait_s
        meta = await batch_meta(aconn, batch_id, name)
        while meta.get("state") == "preparing" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            meta = await batch_meta(aconn, batch_id, name)
        if meta.get("state") == "failed":
            raise ApiError(422, meta.get("error") or "the batch could not be prepared")
        if meta.get("state") == "preparing":
            raise ApiError(503, "the batch is still being prepared", {"Retry-After": "10"})
        lines = results.stream(
            aconn,
            self.state["conn"],
            batch_id,
            int(meta["windows"]),
            RowFormat(format),
            deadline,
            self.api.results_wait_s,
        )
        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(
            lines,
            media_type=f"{media}; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{batch_id}.{format}"'},
        )


#: The upload's request body, for the OpenAPI schema (the route reads the stream itself).
_UPLOAD: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            }
        },
    }
}
