"""`temper board`: a small web page on FastAPI to build, launch and watch runs, then chat, evaluate, export.

The page (static/) talks JSON to these routes; the routes call temper's Python API (config parsing, data
loading, the inference Engine) and start runs, evaluations and exports as `temper ...` subprocesses (jobs.py).
Live curves and logs stream as server-sent events read from each run's metrics.jsonl and log file.

Example:
    >>> from temper.board.app import run_board
    >>> run_board(runs_root="runs", port=7860)                                    # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import secrets
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from temper.board import catalog
from temper.board.chat import ChatEngines
from temper.board.forms import FormError, build_launch, check_data, form_spec
from temper.board.jobs import Jobs
from temper.errors import ConfigError, TemperError
from temper.inference.engine import UnknownModelError
from temper.runs import METRICS

STATIC = Path(__file__).parent / "static"
MAX_BODY = 256 * 1024  # forms and chats are small; anything bigger is a mistake or an attack
MAX_UPLOAD = 64 << 20  # a data file uploaded from the page
LOG_TAIL = 200_000  # bytes of log sent when a page (re)connects


def device_line() -> str:
    """What will train here, shown on the page (a CPU-only machine must not look like a broken GPU one)."""
    import torch

    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"CUDA: {names}"
    from temper.models.dtype import bf16_supported

    return (
        f"CPU only ({torch.get_num_threads()} threads, {'bf16' if bf16_supported() else 'fp32'}); "
        "runs train on the CPU, slower than a GPU but for real"
    )


def create_app(
    runs_root: str | Path = "runs", data_dirs: list[str | Path] | None = None, auth: str | None = None
) -> FastAPI:
    """The board app. `auth` is "user:password" for HTTP basic auth on every route."""
    root = Path(runs_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    data_roots = [Path(d) for d in (data_dirs or ["data", "../shared/data/llamafactory"])]
    jobs = Jobs(root)
    engines = ChatEngines(root)
    app = FastAPI(title="temper board", docs_url=None, redoc_url=None)
    device = device_line()
    # The first preview would otherwise pay for importing transformers' tokenizers (seconds on a busy CPU).
    threading.Thread(target=_warm_imports, daemon=True).start()

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        if auth is not None and not _auth_ok(request.headers.get("authorization"), auth):
            return Response(
                "authentication required",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="temper"'},
            )
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > MAX_BODY:
            return JSONResponse(
                {"error": f"request body of {size} bytes exceeds {MAX_BODY}"}, status_code=413
            )
        return await call_next(request)  # type: ignore[no-any-return]

    @app.exception_handler(TemperError)
    async def temper_error(request: Request, e: TemperError) -> JSONResponse:
        if isinstance(e, FormError):
            return JSONResponse({"errors": e.errors}, status_code=422)
        field = e.key if isinstance(e, ConfigError) and e.key else ""
        status = 404 if isinstance(e, catalog.NotFoundError | UnknownModelError) else 400
        return JSONResponse(
            {"error": e.message, "hint": e.hint, "errors": {field: e.message}}, status_code=status
        )

    @app.get("/")
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/static/{name}")
    async def static(name: str) -> FileResponse:
        path = STATIC / name
        if name not in {p.name for p in STATIC.iterdir()}:
            return Response(status_code=404)  # type: ignore[return-value]
        return FileResponse(path)

    @app.get("/api/info")
    async def info() -> dict[str, Any]:
        return {
            "device": device,
            "runs_root": str(root),
            "methods": form_spec(),
            "models": catalog.list_models(root),
            "data_files": catalog.list_data_files(data_roots),
            "dataset_infos": catalog.list_dataset_infos(data_roots),
        }

    @app.post("/api/upload")
    async def upload(file: UploadFile) -> dict[str, Any]:
        """Save an uploaded data file into the first data folder (a bare, new file name; never overwrites)."""
        dest = await run_in_threadpool(
            catalog.save_upload, file.file, file.filename or "", data_roots[0], MAX_UPLOAD
        )
        return {"path": str(dest)}

    @app.post("/api/command")
    async def command(request: Request) -> dict[str, Any]:
        """Validate the form; answer the command and YAML it stands for (nothing is started)."""
        body = await _json(request)
        launch = await run_in_threadpool(_launch_from, body, root)
        return {"command": launch.command, "yaml": launch.yaml}

    @app.post("/api/preview")
    async def preview(request: Request) -> dict[str, Any]:
        from temper.board.preview import preview as make_preview

        body = await _json(request)
        launch = await run_in_threadpool(_launch_from, body, root)
        method = str(body.get("method", "sft"))
        try:
            rows = await run_in_threadpool(make_preview, launch.config, method, int(body.get("rows", 3)))
        except TemperError as e:
            key = "train" if method == "classify" else "dataset"
            raise FormError({key: e.message}) from None
        return {"rows": rows, "command": launch.command, "yaml": launch.yaml}

    @app.post("/api/runs")
    async def launch_run(request: Request) -> dict[str, Any]:
        body = await _json(request)
        launch = await run_in_threadpool(_launch_from, body, root)
        if launch.run_dir.exists() and any(launch.run_dir.iterdir()):
            raise FormError(
                {"run_name": f"{launch.run_dir.name} already exists; pick another name or resume it"}
            )
        await run_in_threadpool(check_data, launch, str(body.get("method", "sft")))
        job = jobs.start("train", launch.run_dir.name, launch.argv)
        return {
            "run": launch.run_dir.name,
            "job": job.to_dict(),
            "command": launch.command,
            "yaml": launch.yaml,
        }

    @app.get("/api/runs")
    async def runs() -> list[dict[str, Any]]:
        return await run_in_threadpool(catalog.list_runs, root, jobs)

    @app.get("/api/runs/{name}")
    async def run_detail(name: str) -> dict[str, Any]:
        run_dir = catalog.run_path(root, name)
        if not run_dir.is_dir() and not jobs.for_run(name):
            raise catalog.NotFoundError(f"no run {name!r} in {root}.")
        return await run_in_threadpool(catalog.run_detail, run_dir, jobs)

    @app.post("/api/runs/{name}/stop")
    async def stop(name: str, force: bool = False) -> dict[str, Any]:
        job = jobs.latest(catalog.run_path(root, name).name, "train")
        if job is None or not job.alive():
            raise TemperError(f"run {name!r} is not running under this board.")
        jobs.stop(job, force=force)
        return {"job": job.to_dict()}

    @app.post("/api/runs/{name}/resume")
    async def resume(name: str) -> dict[str, Any]:
        run_dir = catalog.run_path(root, name)
        detail = catalog.run_summary(run_dir, jobs)
        if detail["status"] in ("running", "stopping", "running (cli)"):
            raise TemperError(f"run {name!r} is {detail['status']}; stop it before resuming.")
        argv = catalog.resume_argv(run_dir, str(detail["kind"]))
        job = jobs.start("train", name, argv)
        return {"job": job.to_dict()}

    @app.get("/api/runs/{name}/events")
    async def events(name: str, request: Request) -> StreamingResponse:
        run_dir = catalog.run_path(root, name)
        if not run_dir.is_dir() and not jobs.for_run(name):
            return JSONResponse({"error": f"no run {name!r} in {root}"}, status_code=404)  # type: ignore[return-value]
        return StreamingResponse(_event_stream(run_dir, jobs, request), media_type="text/event-stream")

    @app.post("/api/runs/{name}/eval")
    async def evaluate(name: str, request: Request) -> dict[str, Any]:
        run_dir = catalog.run_path(root, name)
        body = await _json(request)
        argv = ["eval", str(run_dir), "--eval-dataset", str(body.get("eval_dataset", "general_mcq"))]
        if body.get("limit"):
            argv += ["--limit", str(int(body["limit"]))]
        for key, value in (body.get("options") or {}).items():
            argv += [f"--{str(key).replace('_', '-')}", str(value)]
        from temper.commands.eval import split_positionals
        from temper.evaluation.config import EvalConfig

        EvalConfig.from_sources(*split_positionals(argv[1:]))  # the CLI's own validation, before starting
        job = jobs.start("eval", name, argv)
        return {"job": job.to_dict()}

    @app.post("/api/runs/{name}/export")
    async def export(name: str, request: Request) -> dict[str, Any]:
        run_dir = catalog.run_path(root, name)
        body = await _json(request)
        kind = str(body.get("kind", "merge"))
        if kind == "merge":
            argv = ["export", str(run_dir), "--merge", "--output-dir", str(root / f"{name}-merged")]
        elif kind in ("f16", "q8_0", "q4_0"):
            argv = ["export", str(run_dir), "--gguf", kind, "--output-dir", str(root / f"{name}-gguf-{kind}")]
        else:
            raise ConfigError(f"export: got {kind!r}, expected merge, f16, q8_0 or q4_0.", key="kind")
        job = jobs.start("export", name, argv)
        return {"job": job.to_dict()}

    @app.get("/api/jobs/{job_id}/log")
    async def job_log(job_id: str) -> Response:
        job = jobs.jobs.get(job_id)
        if job is None:
            return JSONResponse({"error": f"no job {job_id!r}"}, status_code=404)
        return Response(_tail(Path(job.log), LOG_TAIL), media_type="text/plain")

    @app.get("/api/chat/adapters")
    async def chat_adapters(model: str) -> dict[str, Any]:
        return await run_in_threadpool(engines.adapters, model)

    @app.post("/api/chat")
    async def chat(request: Request) -> StreamingResponse:
        body = await _json(request)
        model = str(body.get("model") or "")
        messages = body.get("messages")
        if not model or not isinstance(messages, list) or not messages:
            raise ConfigError("chat needs `model` and a non-empty `messages` list.", key="messages")
        pieces = await run_in_threadpool(  # errors here become a JSON error, not a broken stream
            engines.start,
            model,
            body.get("adapter"),
            messages,
            min(int(body.get("max_tokens", 256)), 2048),
            float(body.get("temperature", 0.0)),
        )
        return StreamingResponse(iterate_in_threadpool(pieces), media_type="text/plain; charset=utf-8")

    @app.on_event("shutdown")
    async def shutdown() -> None:
        engines.close()

    return app


def _warm_imports() -> None:
    import temper.board.preview  # noqa: F401
    import temper.data.templates  # noqa: F401
    import temper.models.load  # noqa: F401


def _launch_from(body: dict[str, Any], root: Path) -> Any:
    return build_launch(
        str(body.get("method", "sft")),
        body.get("values") or {},
        root,
        str(body.get("run_name", "")),
        str(body.get("extra", "")),
    )


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError("the request body is not JSON.") from None
    if not isinstance(body, dict):
        raise ConfigError("the request body must be a JSON object.")
    return body


def _auth_ok(header: str | None, expected: str) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return False
    return secrets.compare_digest(given.encode(), expected.encode())


def _tail(path: Path, limit: int) -> str:
    if not path.exists():
        return ""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - limit))
        return f.read().decode("utf-8", errors="replace")


async def _event_stream(run_dir: Path, jobs: Jobs, request: Request) -> AsyncIterator[str]:
    """metrics rows, log text and status changes of one run, from the start (so a reload loses nothing)."""
    metrics_path = run_dir / METRICS
    metrics_pos = 0
    log_pos: dict[str, int] = {}
    status = None
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        sent = False
        size = metrics_path.stat().st_size if metrics_path.exists() else 0
        if size < metrics_pos:  # a resumed run rewrote the file (rows after its checkpoint dropped)
            metrics_pos = 0
            yield _sse("reset", {})
        if size > metrics_pos:
            with metrics_path.open("rb") as f:
                f.seek(metrics_pos)
                chunk = f.read(size - metrics_pos)
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a half-written last line waits for the next turn
            metrics_pos += len(complete)
            rows = [
                json.loads(line) for line in complete.decode("utf-8", "replace").splitlines() if line.strip()
            ]
            if rows:
                yield _sse("metrics", rows)
                sent = True
        for job in jobs.for_run(run_dir.name):
            path = Path(job.log)
            if not path.exists() or log_pos.get(job.log, -1) == path.stat().st_size:
                continue
            start = log_pos.get(job.log, max(0, path.stat().st_size - LOG_TAIL))
            with path.open("rb") as f:
                f.seek(start)
                text = f.read()
            log_pos[job.log] = start + len(text)
            yield _sse("log", {"job": job.id, "kind": job.kind, "text": text.decode("utf-8", "replace")})
            sent = True
        now_status = catalog.run_status(run_dir, jobs)
        if now_status != status:
            status = now_status
            yield _sse("status", catalog.run_summary(run_dir, jobs))
            sent = True
        if not sent and time.monotonic() - last_beat > 15:
            yield ": keep-alive\n\n"
        if sent:
            last_beat = time.monotonic()
        await asyncio.sleep(0.5)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


def run_board(
    runs_root: str | Path = "runs",
    host: str = "127.0.0.1",
    port: int = 7860,
    auth: str | None = None,
    data_dirs: list[str | Path] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve the board until interrupted (runs it started keep going; a new board picks them up)."""
    import uvicorn

    app = create_app(runs_root, data_dirs, auth)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=2)
