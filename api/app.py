"""The HTTP API: FastAPI routes over the shared queue client, with auth, limits and metrics.

``POST /v1/classify`` enqueues one job (up to 1,024 reviews) on the interactive queue and awaits
its result on RQ's result stream (``shared.aqueue``): no thread and no polling per request.
Batches (``api.batch_routes``) reuse the producer's library (``shared.batches``): the same plan,
windows and output lines as ``sentiment-enqueue``.  Every refusal that must cost nothing (token,
rate, body size and pace) happens in ``api.guard``, before a body byte is read.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api import metrics
from api.auth import Denied, Tokens
from api.batch_routes import Batches, caller
from api.config import ApiSettings
from api.errors import ApiError, error_response
from api.guard import BodyRules, Guard
from api.inputs import (
    CLASSIFY_BODY,
    CLASSIFY_QUERY,
    FeedbackBody,
    classify_options,
    highlight_limit,
    read_reviews_from,
    with_highlights,
)
from api.page import render_page
from shared import feedback
from shared.aqueue import AsyncQueueClient, Ticket
from shared.config import Settings
from shared.queues import connect, redis_out_of_memory
from shared.ratelimit import AsyncLimiter, Limiter
from shared.schema import make_payload, review_error

log = structlog.get_logger(__name__)

#: Reviews of at most this many characters in all are highlighted on the event loop; longer
#: requests in a thread (a long highlight would hold up every other request).
INLINE_HIGHLIGHT_CHARS = 20_000


def create_app(settings: Settings, api: ApiSettings) -> FastAPI:
    """The application; Redis clients are opened at startup and closed at shutdown."""
    tokens = Tokens(api.tokens)
    state: dict[str, Any] = {}
    batch_routes = Batches(settings, api, state)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        state["client"] = AsyncQueueClient(
            settings.redis_url,
            job_timeout=settings.job_timeout,
            result_ttl=settings.interactive_result_ttl,
            failure_ttl=settings.interactive_result_ttl,
        )
        state["conn"] = connect(settings.redis_url, check=False)
        state["limiter"] = AsyncLimiter(state["client"].aconn)
        state["votes"] = Limiter(state["conn"])
        log.info("api_ready", auth="tokens" if tokens else "none (--insecure-local)")
        try:
            yield
        finally:
            batch_routes.close()
            await state["client"].close()
            state["conn"].close()

    app = FastAPI(
        title="review-sentiment API",
        version="1",
        summary="Movie-review sentiment with the words that decided it, on the workers' queue.",
        lifespan=lifespan,
    )
    app.include_router(batch_routes.router)

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

    # Outermost: token, rate and body limits before any body byte is read; metrics; access log.
    app.add_middleware(
        Guard,
        tokens=tokens,
        limiter=lambda: state.get("limiter"),
        rate_per_minute=api.rate_per_minute,
        body=BodyRules(api.max_body_bytes, api.max_upload_bytes, api.body_idle_s, api.body_total_s),
    )

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
        """Redis answers (the API can take requests).  Not tied to workers: with none (scaled
        to zero), requests still queue and are what wakes them up; ``workers`` says how many
        are live."""
        client: AsyncQueueClient = state["client"]
        try:
            await client.aconn.ping()
            live = await client.live_workers()
        except RedisError as exc:
            return JSONResponse({"ready": False, "reason": f"redis: {exc}"}, status_code=503)
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
        openapi_extra={**CLASSIFY_BODY, "parameters": CLASSIFY_QUERY},
        responses={422: {"description": 'a malformed query or body: `{"error": ...}`'}},
    )
    async def classify(request: Request) -> Response:
        """Classify one review (form field or JSON ``review``) or up to 1,024 (``reviews``).

        Every review gets a result, in order: label, class scores, ``verdict`` (positive,
        negative, mixed or neutral), ``reasons``, top words and phrases, ``sentences`` (character
        offsets, label, scores and words of each; ``?sentences=false`` skips them), ``highlights``
        ([start, end, weight toward positive] spans of the review's own text) and the model
        version; or ``error`` for that review alone."""
        k, tokens_, sentences = classify_options(request.query_params, api.top_words)
        items, single = await read_reviews_from(request)
        client: AsyncQueueClient = state["client"]
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
            payload = make_payload(
                [items[i] for i in valid], k, await client.served_version(), sentences=sentences
            )
            if tokens_:
                payload["options"]["token_weights"] = True
            answer = await run_job(payload)
            version = answer["model_version"]
            texts = [items[i][1] for i in valid]
            limit = highlight_limit(len(texts))

            def highlight() -> list[dict[str, Any]]:
                return [
                    with_highlights(t, r, limit)
                    for t, r in zip(texts, answer["results"], strict=True)
                ]

            # Highlighting a chat-sized request costs less than a hop to a thread and back.
            small = sum(len(t) for t in texts) <= INLINE_HIGHLIGHT_CHARS
            highlighted = highlight() if small else await asyncio.to_thread(highlight)
            for i, item in zip(valid, highlighted, strict=True):
                results[i] = item
        for item in results:
            metrics.REVIEWS.labels(item.get("label") or "error").inc()
        # Encoded here (orjson): FastAPI would first copy the answer through jsonable_encoder.
        body = {"model_version": version, "results": results}
        return Response(orjson.dumps(body), media_type="application/json")

    @app.post("/v1/feedback", status_code=201, tags=["feedback"])
    async def give_feedback(body: FeedbackBody, name: str = Depends(caller)) -> dict[str, Any]:
        """Say which label is right for a text (after a ``/v1/classify`` answer, say).

        The voter is this token: one vote per token and ``message_id`` (a later one replaces
        the earlier).  A token declared a trusted feedback source (``API_FEEDBACK_TRUSTED``)
        may name its end ``user``; then each end user is a voter of their own.  The text is
        kept for training, within the voter's budget."""
        trusted = name in api.feedback_trusted
        if body.user and not trusted:
            raise ApiError(
                403,
                "this token votes as itself: only a trusted feedback source may vote for its "
                "users (API_FEEDBACK_TRUSTED); send the vote without 'user'",
            )
        voter = feedback.hash_user(f"api:{name}:{body.user}" if body.user else f"api:{name}")
        message = body.message_id or hashlib.sha256(body.text.encode()).hexdigest()[:24]
        item = feedback.Feedback(
            text=body.text,
            label=body.label,
            predicted=body.predicted or "",
            model_version=body.model_version or "",
            user=voter,
            message=f"api:{name}:{message}",
            source="api",
            at=time.time(),
        )
        limiter: Limiter = state["votes"]
        try:
            feedback.check(item)
            if trusted:
                await asyncio.to_thread(
                    feedback.allow, limiter, f"api:{name}", api.feedback_trusted_rate_per_minute
                )
            await asyncio.to_thread(feedback.allow, limiter, voter, api.feedback_rate_per_minute)
            entry = await asyncio.to_thread(
                feedback.record, state["conn"], item, api.feedback_budget
            )
        except feedback.RateLimited as exc:
            raise ApiError(429, str(exc), {"Retry-After": str(exc.retry_after)}) from exc
        except feedback.BudgetExceeded as exc:
            raise ApiError(429, str(exc), {"Retry-After": "3600"}) from exc
        except feedback.FeedbackError as exc:
            raise ApiError(422, str(exc)) from exc
        return {"stored": entry, "message_id": message, "label": body.label}

    async def run_job(payload: dict[str, Any]) -> dict[str, Any]:
        client: AsyncQueueClient = state["client"]
        ticket: Ticket = await client.submit_payload(payload)
        try:
            outcome = await client.wait(ticket.job_id, api.timeout_s)
        except RedisError:
            client.cancel_later(ticket)
            raise
        if outcome is None:
            client.cancel_later(ticket)
            metrics.TIMEOUTS.inc()
            raise ApiError(
                503,
                f"no worker answered within {api.timeout_s:g} s (workers busy, down or starting "
                "from zero); retry later",
                {"Retry-After": "10"},
            )
        if outcome.result is None:
            log.error("job_failed", job_id=ticket.job_id, reason=outcome.error)
            raise ApiError(502, f"the worker could not classify this request: {outcome.error}")
        return outcome.result

    return app
