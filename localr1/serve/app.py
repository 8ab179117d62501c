"""The HTTP routes: GET /health, GET /v1/models, POST /v1/chat/completions (SSE or one JSON).

Every failure is an OpenAI-shaped error (never a traceback), and a bad request never stops the
server. A client that goes away cancels its request, which frees its decoder slot at the next
step: Starlette cancels a stream whose client disconnected; a plain request watches for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from localr1.engine.events import AnswerDelta, GenerationParams, ReasoningDelta, TurnDone, TurnStats
from localr1.engine.model_process import check_answer_grammar
from localr1.engine.parallel_decoder import SequenceRequest
from localr1.errors import ContextOverflowError, GenerationError, LocalR1Error
from localr1.models.choice import ChosenModel
from localr1.serve.api_error import ApiError
from localr1.serve.auth import check_bearer
from localr1.serve.chat_log import ChatLog
from localr1.serve.model_names import ModelNames
from localr1.serve.request_parsing import ChatRequest, parse_chat_request, parse_json_body
from localr1.serve.responses import (
    SSE_DONE,
    Completion,
    ReasoningFormat,
    finish_reason,
    response_notes,
)
from localr1.serve.scheduler import DecoderFailed, Scheduler, ServedEngine, Ticket
from localr1.serve.stop_strings import StopMatcher

log = logging.getLogger("localr1.serve")


@dataclass(frozen=True)
class ServeState:
    scheduler: Scheduler
    names: ModelNames
    defaults: GenerationParams  # for the fields a request leaves out
    reasoning_format: ReasoningFormat = "both"
    api_key: str | None = None
    max_body_bytes: int = 4 << 20
    chat_log: ChatLog | None = None
    # Requests waiting for a model swap block a thread each: their own pool, so the default
    # one stays free for /v1/models and --log saves.
    submit_pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        max_workers=256, thread_name_prefix="localr1-submit"))


def create_app(state: ServeState) -> Starlette:
    async def health(_request: Request) -> Response:
        """Open without the key, like llama-server's: 503 while a model loads."""
        scheduler = state.scheduler
        current = scheduler.current
        body = {"status": "ok" if scheduler.ready else
                ("loading model" if current else "no model loaded"),
                "model": current.name if current else None,
                "slots": scheduler.shape.parallel, "in_flight": scheduler.in_flight,
                "waiting": scheduler.waiting}
        return JSONResponse(body, status_code=200 if scheduler.ready else 503)

    async def models(request: Request) -> Response:
        check_bearer(request.headers.get("authorization"), state.api_key)
        listing = await asyncio.to_thread(state.names.listing, state.scheduler.current)
        return JSONResponse(listing)

    async def chat_completions(request: Request) -> Response:
        check_bearer(request.headers.get("authorization"), state.api_key)
        data = parse_json_body(await _body(request, state.max_body_bytes))
        # In a thread: a JSON schema's grammar can take a while to build.
        chat = await asyncio.to_thread(parse_chat_request, data, state.defaults)
        chosen = await asyncio.to_thread(state.names.resolve, chat.model,
                                         state.scheduler.current)
        ticket = Ticket(asyncio.get_running_loop())
        try:
            engine = await _submit(state, chosen, chat, ticket)
        except BaseException:  # cancelled while its submit thread goes on: drop the request
            ticket.cancel.set()
            raise
        completion = Completion(chosen.name, state.reasoning_format)
        turn = _Turn(state, chat, ticket, engine, chosen)
        if chat.stream:
            return StreamingResponse(_stream(turn, completion), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        return await _whole(turn, completion, request)

    models, chat_completions = _guarded(models), _guarded(chat_completions)
    routes = [Route("/health", health, methods=["GET"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/models", models, methods=["GET"]),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/chat/completions", chat_completions, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={404: _not_found, 405: _not_allowed})


Handler = Callable[[Request], Awaitable[Response]]


def _guarded(handler: Handler) -> Handler:
    """Any failure as an OpenAI error response: ours with their status, a bug as a 500 that
    names the exception (the server log says where) and never shows a traceback."""
    @functools.wraps(handler)
    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return _error_response(exc)
        except ClientDisconnect:  # gone mid-upload: nobody to answer
            return Response(status_code=499)
        except Exception as exc:
            log.exception("localr1 serve: internal error on %s", request.url.path)
            return _error_response(ApiError(500, f"internal error: {type(exc).__name__}",
                                            code="internal_error"))
    return guarded


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"the request body is larger than {limit >> 10} KiB",
                    code="request_too_large")


async def _submit(state: ServeState, chosen: ChosenModel, chat: ChatRequest,
                  ticket: Ticket) -> ServedEngine:
    def make(engine: ServedEngine) -> SequenceRequest:
        n_ctx = state.scheduler.context_per_sequence(engine)
        prompt = engine.prepare_prompt(chat.messages, chat.params, system_prompt=chat.system,
                                       n_ctx=n_ctx)
        if chat.params.answer_grammar is not None:
            check_answer_grammar(engine, chat.params.answer_grammar)
        return SequenceRequest(key=ticket, prompt=prompt, params=chat.params,
                               cancel=ticket.cancel)

    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(state.submit_pool, state.scheduler.submit, chosen,
                                          make)
    except ContextOverflowError as exc:
        raise ApiError(400, _overflow_message(exc, chat), code="context_length_exceeded",
                       param="messages") from None
    except GenerationError as exc:  # the model's process ended (a lost RPC worker): ours
        raise ApiError(503, f"generation failed: {exc}", code="generation_failed") from None
    except LocalR1Error as exc:
        raise ApiError(400, str(exc), code="invalid_request") from None


def _overflow_message(exc: ContextOverflowError, chat: ChatRequest) -> str:
    """The engine's message names CLI flags: this one says it in the API's terms."""
    fix = "send a shorter conversation" + (" or a smaller max_tokens"
                                           if chat.params.max_tokens and exc.reserved_tokens
                                           else "")
    if exc.prompt_tokens is None or exc.n_ctx is None:
        return f"the messages do not fit the server's context; {fix}"
    reserved = exc.reserved_tokens or 0
    return (f"the prompt needs {exc.prompt_tokens} tokens but the server's context of "
            f"{exc.n_ctx} tokens per request leaves {exc.n_ctx - reserved} after reserving "
            f"{reserved} for the reply; {fix}")


def stopped_stats(stats: TurnStats) -> TurnStats:
    """A turn that a stop string ended was cancelled by us, but finished for the client."""
    return replace(stats, finish_reason="stop")


class _Turn:
    """One request's events as (kind, text) pieces: stop strings applied, the totals kept."""

    def __init__(self, state: ServeState, chat: ChatRequest, ticket: Ticket, engine: ServedEngine,
                 chosen: ChosenModel) -> None:
        self.state, self.chat, self.ticket = state, chat, ticket
        self.engine, self.chosen = engine, chosen
        self.stops = StopMatcher(chat.stop)
        self.reasoning = ""
        self.answer = ""
        self.stats = None
        self.reason = "stop"

    async def pieces(self) -> AsyncIterator[tuple[str, str]]:
        while True:
            event = await self.ticket.events.get()
            if isinstance(event, DecoderFailed):
                raise ApiError(500, f"generation failed: {event.message}",
                               code="generation_failed")
            if isinstance(event, ReasoningDelta) and not self.stops.stopped:
                self.reasoning += event.text
                yield "reasoning", event.text
            elif isinstance(event, AnswerDelta):
                text = self.stops.feed(event.text)
                if self.stops.stopped:
                    self.ticket.cancel.set()  # the rest is not wanted: free the slot
                if text:
                    self.answer += text
                    yield "answer", text
            elif isinstance(event, TurnDone):
                tail = self.stops.finish()
                if tail:
                    self.answer += tail
                    yield "answer", tail
                stats = event.stats
                if self.stops.stopped:
                    stats = stopped_stats(stats)
                self.stats = stats
                self.reason = finish_reason(stats.finish_reason, self.stops.stopped)
                for note in response_notes(stats):
                    log.warning("localr1 serve: %s: %s", self.chosen.name, note)
                await self._log()
                return

    async def _log(self) -> None:
        if self.state.chat_log is None or self.stats.finish_reason == "cancelled":
            return
        try:
            await asyncio.to_thread(self.state.chat_log.save, self.engine, self.chosen.name,
                                    self.chat, self.reasoning, self.answer, self.stats)
        except LocalR1Error as exc:  # the client still gets its answer
            log.warning("localr1 serve: could not log the chat: %s", exc)


async def _stream(turn: _Turn, completion: Completion) -> AsyncIterator[str]:
    try:
        yield completion.first_chunk()
        try:
            async for kind, text in turn.pieces():
                yield completion.reasoning_chunk(text) if kind == "reasoning" \
                    else completion.answer_chunk(text)
        except ApiError as exc:  # the status line is sent: the error goes in the stream
            yield f"data: {json.dumps(exc.body())}\n\n"
            return
        yield completion.last_chunk(turn.reason, turn.stats)
        if turn.chat.include_usage:
            yield completion.usage_chunk(turn.stats)
        yield SSE_DONE
    finally:  # the client went away (Starlette cancels us) or the turn ended: free the slot
        turn.ticket.cancel.set()


async def _whole(turn: _Turn, completion: Completion, request: Request) -> Response:
    async def collect() -> None:
        async for _ in turn.pieces():
            pass

    work = asyncio.ensure_future(collect())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not work.done():  # the client went away (or we were cancelled): free the slot
            turn.ticket.cancel.set()
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        return Response(status_code=499)  # nginx's "client closed request"; nobody reads it
    work.result()  # raises a DecoderFailed's ApiError
    return JSONResponse(completion.response(turn.reasoning, turn.answer, turn.reason,
                                            turn.stats))


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _error_response(exc: ApiError) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _not_found(request: Request, _exc: Exception) -> Response:
    return _error_response(ApiError(404, f"no route {request.url.path}", code="not_found"))


async def _not_allowed(request: Request, _exc: Exception) -> Response:
    return _error_response(ApiError(405, f"{request.method} is not allowed on "
                                         f"{request.url.path}", code="method_not_allowed"))
