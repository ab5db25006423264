"""The HTTP API: FastAPI routes over the shared queue client, with auth, limits and metrics.

``POST /v1/classify`` enqueues one job (up to 1,024 reviews) on the interactive queue and awaits
its result on RQ's result stream (``shared.aqueue``): no thread and no polling per request.
Batches reuse the producer's library (``shared.batches``): the same plan, ids, windows and
output lines as ``sentiment-enqueue``, so a file uploaded here and one enqueued from the command
line give the same results (and share the same jobs).
"""

from __future__ import annotations

import asyncio
import hashlib
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
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics
from api.auth import Denied, RateLimiter, Tokens
from api.config import ApiSettings
from api.errors import ApiError, BodyLimit, error_response
from api.inputs import (
    CLASSIFY_BODY,
    FeedbackBody,
    read_reviews_from,
    upload_name,
    with_highlights,
)
from api.page import render_page
from api.progress import batch_progress, check_batch_id
from shared import batches, feedback
from shared.aqueue import AsyncQueueClient
from shared.config import Settings
from shared.datasets import DataError
from shared.output import RowFormat
from shared.queues import QUEUE_BULK, connect, redis_out_of_memory
from shared.schema import (
    MAX_TOP_WORDS,
    make_payload,
    review_error,
)

log = structlog.get_logger(__name__)

STREAM_PIECE_CHARS = 1 << 16


def create_app(settings: Settings, api: ApiSettings) -> FastAPI:
    """The application; Redis clients are opened at startup and closed at shutdown."""
    tokens = Tokens(api.tokens)
    limiter = RateLimiter(api.rate_per_minute)
    state: dict[str, Any] = {}

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
        feedback.warn_if_default_salt()
        log.info("api_ready", auth="tokens" if tokens else "none (--insecure-local)")
        try:
            yield
        finally:
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
        openapi_extra={"requestBody": CLASSIFY_BODY},
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

    @app.post("/v1/feedback", status_code=201, tags=["feedback"])
    async def give_feedback(body: FeedbackBody, name: str = Depends(caller)) -> dict[str, Any]:
        """Say which label is right for a text (after a ``/v1/classify`` answer, say).

        Stored once per (message, user): a later vote on the same ``message_id`` by the same
        token and ``user`` replaces the earlier.  The text is kept for training."""
        client: AsyncQueueClient = state["client"]
        user = feedback.hash_user(f"api:{name}:{body.user or ''}")
        message = body.message_id or hashlib.sha256(body.text.encode()).hexdigest()[:24]
        item = feedback.Feedback(
            text=body.text,
            label=body.label,
            predicted=body.predicted or "",
            model_version=body.model_version or "",
            user=user,
            message=f"api:{message}",
            source="api",
            at=time.time(),
        )
        try:
            feedback.check(item)
            await asyncio.to_thread(feedback.allow, client.conn, user, api.feedback_rate_per_minute)
            entry = await asyncio.to_thread(feedback.record, client.conn, item)
        except feedback.RateLimited as exc:
            raise ApiError(429, str(exc), {"Retry-After": "60"}) from exc
        except feedback.FeedbackError as exc:
            raise ApiError(422, str(exc)) from exc
        return {"stored": entry, "message_id": message, "label": body.label}

    async def run_job(payload: dict[str, Any]) -> dict[str, Any]:
        client: AsyncQueueClient = state["client"]
        (job_id,) = await client.submit_payloads([payload])
        try:
            outcome = await client.wait(job_id, api.timeout_s)
        except RedisError:
            state["client"].cancel_later(job_id)
            raise
        if outcome is None:
            state["client"].cancel_later(job_id)
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
            options = batches.Options.from_settings(
                settings,
                top_words=api.top_words if top_words is None else top_words,
                queue=QUEUE_BULK,
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
        formatter = RowFormat(format)

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

    return app
