"""The HTTP API: FastAPI routes over the shared queue client, with auth, limits and metrics.

``POST /v1/classify`` enqueues one job (up to 1,024 reviews) on the interactive queue and awaits
its result on RQ's result stream (``shared.aqueue``): no thread and no polling per request.
Batches reuse the producer's library (``shared.batches``): the same plan, ids, windows and
output lines as ``sentiment-enqueue``, so a file uploaded here and one enqueued from the command
line give the same results (and share the same jobs).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import structlog
from fastapi import Depends, FastAPI, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from redis.exceptions import RedisError
from starlette.datastructures import UploadFile as StarletteUpload
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import metrics
from api.auth import Denied, RateLimiter, Tokens
from api.config import ApiSettings
from api.page import render_page
from shared import batches
from shared.aqueue import AsyncQueueClient
from shared.config import Settings
from shared.datasets import DataError
from shared.highlight import word_spans
from shared.queues import QUEUE_BULK, connect, redis_out_of_memory
from shared.schema import (
    MAX_ID_CHARS,
    MAX_REVIEWS_PER_JOB,
    MAX_TOP_WORDS,
    make_payload,
    review_error,
)

log = structlog.get_logger(__name__)

#: Upload names keep only their format suffix (the producer picks the reader by it).
SUFFIXES = (".tar.gz", ".tgz", ".csv", ".jsonl", ".ndjson", ".txt", ".tsv")
BATCH_ID = re.compile(r"^[0-9a-f]{24}$")
STREAM_PIECE_CHARS = 1 << 16
OPEN_PATHS = {
    "/",
    "/healthz",
    "/readyz",
    "/metrics",
    "/docs",
    "/openapi.json",
    "/docs/oauth2-redirect",
}


class ApiError(Exception):
    """An answer other than 2xx: status, message (the JSON body's ``error``), headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status, headers=headers)


class BodyLimit:
    """413 for a body over the limit, whether announced (Content-Length) or streamed."""

    class TooLarge(Exception):
        pass

    def __init__(self, app: ASGIApp, default: int, uploads: int) -> None:
        self.app, self.default, self.uploads = app, default, uploads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.uploads if scope["path"] == "/v1/batches" else self.default
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        too_large = error_response(413, f"request body over the limit of {limit:,} bytes")
        if length is not None and length.isdigit() and int(length) > limit:
            await too_large(scope, receive, send)
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyLimit.TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except BodyLimit.TooLarge:
            if not started:
                await too_large(scope, receive, send)


def create_app(settings: Settings, api: ApiSettings, insecure_local: bool = False) -> FastAPI:
    """The application; Redis clients are opened at startup and closed at shutdown."""
    tokens = Tokens(api.tokens)
    limiter = RateLimiter(api.rate_per_minute)
    state: dict[str, Any] = {}
    background: set[asyncio.Future[None]] = set()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["client"] = AsyncQueueClient(
            settings.redis_url,
            job_timeout=settings.job_timeout,
            result_ttl=settings.interactive_result_ttl,
            failure_ttl=settings.interactive_result_ttl,
        )
        state["conn"] = connect(settings.redis_url, check=False)
        state["uploads"] = Path(tempfile.mkdtemp(prefix="sentiment-api-"))
        log.info("api_ready", auth="tokens" if tokens else "none (--insecure-local)")
        try:
            yield
        finally:
            await asyncio.gather(*background, return_exceptions=True)
            await state["client"].close()
            state["conn"].close()
            shutil.rmtree(state["uploads"], ignore_errors=True)

    app = FastAPI(
        title="review-sentiment API",
        version="1",
        summary="Movie-review sentiment with the words that decided it, on the workers' queue.",
        lifespan=lifespan,
    )

    # -- errors: always {"error": ..., "status": ...} -----------------------------------------
    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(Denied)
    async def on_denied(_: Request, exc: Denied) -> JSONResponse:
        return error_response(exc.status, exc.message, dict(exc.headers))

    @app.exception_handler(RequestValidationError)
    async def on_invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error_response(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RedisError)
    async def on_redis(_: Request, exc: RedisError) -> JSONResponse:
        if redis_out_of_memory(exc):
            log.error("redis_out_of_memory")
            return error_response(503, "the queue is full (Redis out of memory); retry later")
        log.error("redis_failed", reason=str(exc))
        return error_response(503, "the queue is unavailable; retry later", {"Retry-After": "5"})

    # -- access log and metrics ------------------------------------------------------------
    @app.middleware("http")
    async def observe(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        elapsed = time.perf_counter() - started
        metrics.observe_request(request.method, endpoint, response.status_code, elapsed)
        log.info(
            "http_request",
            method=request.method,
            endpoint=endpoint,
            status=response.status_code,
            caller=request.scope.get("caller"),
            latency_ms=round(1000 * elapsed, 1),
        )
        return response

    app.add_middleware(BodyLimit, default=api.max_body_bytes, uploads=api.max_upload_bytes)

    # -- auth ------------------------------------------------------------------------------
    async def caller(request: Request) -> str:
        """The calling token's name (rate-limited), or "local" on an --insecure-local server."""
        name = tokens.check(request.headers.get("authorization")) if tokens else "local"
        request.scope["caller"] = name
        try:
            limiter.acquire(name)
        except Denied:
            metrics.RATE_LIMITED.labels(name).inc()
            raise
        return name

    # -- routes ----------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(
            render_page(auth_required=bool(tokens)),
            headers={
                "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                "script-src 'self' 'unsafe-inline'; img-src 'self' data:",
                "X-Content-Type-Options": "nosniff",
            },
        )

    @app.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    async def readyz() -> JSONResponse:
        """Redis answers and at least one worker's heartbeat is live."""
        client: AsyncQueueClient = state["client"]
        try:
            await client.aconn.ping()
            live = await client.live_workers()
        except RedisError as exc:
            return JSONResponse({"ready": False, "reason": f"redis: {exc}"}, status_code=503)
        if live == 0:
            return JSONResponse({"ready": False, "reason": "no live worker"}, status_code=503)
        return JSONResponse({"ready": True, "workers": live})

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/model", tags=["model"])
    async def model(_: str = Depends(caller)) -> dict[str, Any]:
        """What the workers serve (their latest announcement)."""
        info = await state["client"].served_model()
        if not info:
            raise ApiError(503, "no worker has announced a model yet")
        return info

    @app.post(
        "/v1/classify",
        tags=["classify"],
        openapi_extra={
            "requestBody": {
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {"review": {"type": "string"}},
                            "required": ["review"],
                        }
                    },
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {
                                    "type": "object",
                                    "properties": {"review": {"type": "string"}},
                                    "required": ["review"],
                                },
                                {
                                    "type": "object",
                                    "properties": {
                                        "reviews": {
                                            "type": "array",
                                            "maxItems": MAX_REVIEWS_PER_JOB,
                                            "items": {
                                                "oneOf": [
                                                    {"type": "string"},
                                                    {
                                                        "type": "object",
                                                        "properties": {
                                                            "id": {"type": "string"},
                                                            "text": {"type": "string"},
                                                        },
                                                        "required": ["text"],
                                                    },
                                                ]
                                            },
                                        }
                                    },
                                    "required": ["reviews"],
                                },
                            ]
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def classify(
        request: Request,
        top_words: int | None = Query(None, ge=0, le=MAX_TOP_WORDS),
        tokens_: bool = Query(False, alias="tokens", description="per-token weights too"),
        _: str = Depends(caller),
    ) -> dict[str, Any]:
        """Classify one review (form field or JSON ``review``) or up to 1,024 (``reviews``).

        Every review gets a result, in order: label, class scores, top words and phrases,
        ``highlights`` ([start, end, weight toward positive] spans of the review's own text)
        and the model version; or ``error`` for that review alone."""
        items, single = await read_reviews_from(request)
        k = api.top_words if top_words is None else top_words
        results: list[dict[str, Any]] = [{} for _ in items]
        valid = []
        for i, (rid, text) in enumerate(items):
            error = review_error(text)
            if error is None:
                valid.append(i)
            else:
                results[i] = {"id": rid, "error": error}
        if single and not valid:
            raise ApiError(422, f"review: {results[0]['error']}")
        version = None
        if valid:
            payload = make_payload([items[i] for i in valid], k)
            if tokens_:
                payload["options"]["token_weights"] = True
            answer = await run_job(payload)
            version = answer["model_version"]
            for i, item in zip(valid, answer["results"], strict=True):
                results[i] = with_highlights(items[i][1], item)
        for item in results:
            metrics.REVIEWS.labels(item.get("label") or "error").inc()
        return {"model_version": version, "results": results}

    async def run_job(payload: dict[str, Any]) -> dict[str, Any]:
        client: AsyncQueueClient = state["client"]
        (job_id,) = await client.submit_payloads([payload])
        try:
            outcome = await client.wait(job_id, api.timeout_s)
        except RedisError:
            cancel_later(job_id)
            raise
        if outcome is None:
            cancel_later(job_id)
            metrics.TIMEOUTS.inc()
            raise ApiError(
                503,
                f"no worker answered within {api.timeout_s:g} s (workers busy or down); "
                "the request was cancelled, retry later",
                {"Retry-After": "10"},
            )
        if outcome.result is None:
            log.error("job_failed", job_id=job_id, reason=outcome.error)
            raise ApiError(502, f"the worker could not classify this request: {outcome.error}")
        return outcome.result

    def cancel_later(job_id: str) -> None:
        task = asyncio.ensure_future(state["client"].cancel(job_id))
        background.add(task)
        task.add_done_callback(background.discard)

    @app.post("/v1/batches", status_code=202, tags=["batches"])
    async def create_batch(
        file: UploadFile,
        top_words: int | None = Query(None, ge=0, le=MAX_TOP_WORDS),
        _: str = Depends(caller),
    ) -> dict[str, Any]:
        """Upload a file in any format ``sentiment-enqueue`` reads (text lines, CSV, JSONL, an
        aclImdb ``.tar.gz``); its reviews go on the bulk queue.  Answers the batch id."""
        folder = Path(tempfile.mkdtemp(dir=state["uploads"]))
        path = folder / upload_name(file.filename)
        try:
            with path.open("wb") as fh:
                while chunk := await file.read(1 << 20):
                    fh.write(chunk)
            options = batches.Options(
                top_words=api.top_words if top_words is None else top_words,
                queue=QUEUE_BULK,
                job_timeout=settings.job_timeout,
                result_ttl=settings.result_ttl,
                failure_ttl=settings.failure_ttl,
            )
            try:
                info = await asyncio.to_thread(
                    batches.submit, state["conn"], batches.file_source([path]), options, False
                )
            except DataError as exc:
                raise ApiError(422, f"{file.filename or 'file'}: {exc.reason}") from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        metrics.BATCH_ROWS.inc(info.rows)
        return {
            "batch_id": info.batch_id,
            "rows": info.rows,
            "jobs": info.jobs,
            "invalid": info.invalid,
            "status_url": f"/v1/batches/{info.batch_id}",
            "results_url": f"/v1/batches/{info.batch_id}/results",
        }

    @app.get("/v1/batches/{batch_id}", tags=["batches"])
    async def batch_status(batch_id: str, _: str = Depends(caller)) -> dict[str, Any]:
        """How far a batch is: jobs ended, rows answered, whether it is complete."""
        check_batch_id(batch_id)
        return await batch_progress(state["client"].aconn, batch_id)

    @app.get("/v1/batches/{batch_id}/results", tags=["batches"])
    async def batch_results(
        batch_id: str,
        format: str = Query("jsonl", pattern="^(jsonl|csv)$"),
        _: str = Depends(caller),
    ) -> StreamingResponse:
        """One line per input line (CSV: one record), in input order, streamed as jobs end:
        exactly ``sentiment-enqueue``'s output for the same file."""
        check_batch_id(batch_id)
        try:
            await asyncio.to_thread(batches.load, state["conn"], batch_id)
        except DataError as exc:
            raise ApiError(404, f"batch {batch_id}: {exc.reason}") from exc
        formatter = batches.RowFormat(format)

        def lines() -> Iterator[str]:
            # Starlette hops to a thread for each item of a sync iterator: yield ~64 KB pieces.
            piece = [formatter.header()]
            size = len(piece[0])
            for row in batches.results(state["conn"], batch_id, progress=False):
                line = formatter.line(row)
                piece.append(line)
                size += len(line)
                if size >= STREAM_PIECE_CHARS:
                    yield "".join(piece)
                    piece, size = [], 0
            yield "".join(piece)

        media = "text/csv" if format == "csv" else "application/x-ndjson"
        return StreamingResponse(
            lines(),
            media_type=f"{media}; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{batch_id}.{format}"',
            },
        )

    def check_batch_id(batch_id: str) -> None:
        if not BATCH_ID.match(batch_id):
            raise ApiError(404, f"no batch {batch_id[:64]!r} (ids are 24 hex digits)")

    async def read_reviews_from(request: Request) -> tuple[list[tuple[str, Any]], bool]:
        """(id, text) pairs from a form or JSON body, and whether it was a single review."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in ("multipart/form-data", "application/x-www-form-urlencoded"):
            try:
                form = await request.form(max_files=1, max_fields=16)
            except UnicodeDecodeError as exc:
                raise ApiError(400, "the form is not valid UTF-8") from exc
            value = form.get("review")
            if value is None:
                raise ApiError(422, "missing form field 'review' (curl -F review='...')")
            if isinstance(value, StarletteUpload):  # curl -F review=@file.txt
                raw = await value.read()
                try:
                    value = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise ApiError(400, "the review is not valid UTF-8 text") from exc
            return [("1", value)], True
        if kind == "application/json":
            raw = await request.body()
            try:
                body = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise ApiError(400, "the body is not valid UTF-8") from exc
            except json.JSONDecodeError as exc:
                raise ApiError(400, f"the body is not valid JSON: {exc}") from exc
            return reviews_from_json(body)
        raise ApiError(
            415,
            "send the review as a form field (multipart/form-data or urlencoded: review=...) "
            'or as JSON ({"review": ...} or {"reviews": [...]})',
        )

    return app


def upload_name(filename: str | None) -> str:
    """The uploaded file's own name (review ids are ``name:line``, as for the producer), made
    safe for a path: no folders, no odd characters, at most 100 characters."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", Path(filename or "upload.txt").name).lstrip(".")
    name = name[-100:] or "upload.txt"
    if not name.lower().endswith(SUFFIXES):
        name += ".txt"
    return name


def reviews_from_json(body: Any) -> tuple[list[tuple[str, Any]], bool]:
    """(id, text) pairs from ``{"review": ...}`` or ``{"reviews": [text or {id, text}, ...]}``."""
    if not isinstance(body, dict) or ("review" in body) == ("reviews" in body):
        raise ApiError(422, 'the JSON body needs exactly one of "review" or "reviews"')
    if "review" in body:
        if not isinstance(body["review"], str):
            raise ApiError(422, '"review" must be a string')
        return [("1", body["review"])], True
    reviews = body["reviews"]
    if not isinstance(reviews, list) or not reviews:
        raise ApiError(422, '"reviews" must be a non-empty list')
    if len(reviews) > MAX_REVIEWS_PER_JOB:
        raise ApiError(
            413,
            f"at most {MAX_REVIEWS_PER_JOB} reviews per request (got {len(reviews)}); "
            "upload a file to /v1/batches for more",
        )
    out: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for i, item in enumerate(reviews):
        rid, text = (
            (item.get("id", str(i + 1)), item.get("text"))
            if isinstance(item, dict)
            else (
                str(i + 1),
                item,
            )
        )
        if not isinstance(rid, str) or not rid or len(rid) > MAX_ID_CHARS:
            raise ApiError(422, f"reviews[{i}].id must be a string of 1-{MAX_ID_CHARS} characters")
        if rid in seen:
            raise ApiError(422, f"reviews[{i}].id {rid!r} repeats an earlier id")
        seen.add(rid)
        out.append((rid, text))  # a text that is not a string gets its own per-review error
    return out, False


def with_highlights(text: str, item: dict[str, Any]) -> dict[str, Any]:
    """The worker's result plus ``highlights``: spans of the review's own text, each with its
    word's weight toward *positive* (the worker's weights lean toward its label)."""
    if item.get("error"):
        return item
    sign = 1.0 if item["label"] == "positive" else -1.0
    pairs = item.get("tokens") or item.get("top_words") or []
    sums: dict[str, list[float]] = {}
    for token, weight in pairs:
        sums.setdefault(str(token), []).append(float(weight))
    weights = {t: sign * sum(ws) / len(ws) for t, ws in sums.items()}
    spans = word_spans(text, weights)
    return {**item, "highlights": [[s.start, s.end, round(s.weight, 4)] for s in spans]}


async def batch_progress(aconn: Any, batch_id: str) -> dict[str, Any]:
    """Rows and jobs of a batch, and how many jobs have ended (status fields only)."""
    meta_raw = await aconn.hgetall(batches.BATCH_KEY.format(batch_id))
    if not meta_raw:
        raise ApiError(404, f"batch {batch_id}: unknown or expired batch id")
    meta = {k.decode(): v.decode() for k, v in meta_raw.items()}
    windows = await aconn.lrange(batches.WINDOWS_KEY.format(batch_id), 0, -1)
    jobs: list[tuple[str, int]] = []
    for raw in windows:
        window = batches.Window.from_json(raw)
        jobs.extend((job_id, len(rows)) for job_id, rows in window.jobs)
    counts = {"finished": 0, "failed": 0}
    answered = 0
    async with aconn.pipeline(transaction=False) as pipe:
        for job_id, _ in jobs:
            pipe.hget(f"rq:job:{job_id}", "status")
        statuses = await pipe.execute() if jobs else []
    for (_, size), raw in zip(jobs, statuses, strict=True):
        status = raw.decode() if raw else "expired"
        if status == "finished":
            counts["finished"] += 1
            answered += size
        elif status in ("failed", "stopped", "canceled", "expired"):
            counts["failed"] += 1
            answered += size
    rows, invalid = int(meta["rows"]), int(meta["invalid"])
    done = counts["finished"] + counts["failed"]
    return {
        "batch_id": batch_id,
        "rows": rows,
        "invalid": invalid,
        "jobs": len(jobs),
        "jobs_finished": counts["finished"],
        "jobs_failed": counts["failed"],
        "rows_done": answered + invalid,
        "progress": round((answered + invalid) / rows, 4) if rows else 1.0,
        "complete": done == len(jobs),
        "results_url": f"/v1/batches/{batch_id}/results",
    }
