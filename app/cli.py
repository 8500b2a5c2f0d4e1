"""`handoff …`: run, serve, migrate, worker, submit, import, search, tokens; `handoffs …` is
in `app.cli_handoffs`."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from app import log
from app.api.document_models import SearchHitOut, SearchResultsOut
from app.cli_handoffs import app as handoffs_app
from app.db import migrations
from app.db.uow import Database
from app.domain.clock import SystemClock
from app.domain.errors import HandoffError
from app.domain.records import ScrapeSubmission
from app.domain.tokens import Scope
from app.heap import freeze_startup_heap
from app.services import documents, importer, scrape_storage, tokens
from app.settings import Settings
from app.worker.runner import Worker, WorkerConfig

app = typer.Typer(
    help="Handoff: durable handoff from scrape storage to ingestion.", no_args_is_help=True
)
app.add_typer(handoffs_app, name="handoffs")
tokens_app = typer.Typer(help="API bearer tokens.", no_args_is_help=True)
app.add_typer(tokens_app, name="tokens")
out = Console()
err = Console(stderr=True)


@app.callback()
def _logging() -> None:
    """Every command logs as the settings say (JSON lines on stderr unless on a terminal),
    so log lines never mix with the JSON some commands print on stdout."""
    try:
        settings = Settings()
    except ValidationError:
        log.configure()  # the command itself reports the invalid settings
        return
    log.configure_from(settings)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        err.print(f"[red]invalid settings:[/] {exc}")
        raise typer.Exit(2) from exc


def _require_current_schema(settings: Settings) -> None:
    try:
        migrations.ensure_current(settings.database_url, settings.migrations_dir)
    except HandoffError as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc


@app.command()
def migrate(
    break_lock: Annotated[
        bool, typer.Option(help="Remove a lock left by a dead migrator.")
    ] = False,
) -> None:
    """Apply pending database migrations (a no-op when current; safe to run concurrently)."""
    settings = _settings()
    if break_lock:
        migrations.break_lock(settings.database_url)
    applied = migrations.apply(settings.database_url, settings.migrations_dir)
    out.print(
        f"applied {len(applied)} migration(s)" + (": " + ", ".join(applied) if applied else "")
    )


def _start_worker(settings: Settings, concurrency: int | None, stop: threading.Event) -> Worker:
    from app.ingest.pipeline import build_handler  # the extractor: only processes that ingest

    config = WorkerConfig.from_settings(settings, concurrency)
    # The loop, completer and rescuer threads and every handler thread may each hold a pooled
    # connection (the listener opens its own).
    db = Database(settings.database_url, pool_size=config.concurrency + 3)
    clock = SystemClock()
    worker = Worker(db, build_handler(settings, db, clock), config=config, clock=clock)
    if not settings.is_sqlite:
        worker.start_listener(stop)
    return worker


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: object) -> None:
        err.print(f"received signal {signum}: stopping (finishing in-flight work)")
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option(min=1, help="Handler threads.")] = None,
    drain: Annotated[
        bool, typer.Option("--drain", help="Ingest what is runnable now, then exit.")
    ] = False,
) -> None:
    """Run an ingestion worker until SIGTERM/SIGINT (or, with --drain, until nothing is
    runnable; prints how many handoffs it ran)."""
    settings = _settings()
    log.configure_from(settings)
    _require_current_schema(settings)
    if drain:
        ran = _start_worker(settings, concurrency, threading.Event()).drain()
        sys.stdout.write(json.dumps({"ingested": ran}) + "\n")
        return
    stop = threading.Event()
    _stop_on_signals(stop)
    if settings.worker_metrics_port is not None:
        _serve_worker_metrics(settings.worker_metrics_host, settings.worker_metrics_port)
    the_worker = _start_worker(settings, concurrency, stop)
    freeze_startup_heap()
    the_worker.run(stop)


def _serve_worker_metrics(host: str, port: int) -> None:
    """This worker's counters (claims, durations, rescues, transitions) at /metrics, on a
    daemon thread. The per-state figures come from the API's /metrics, not from here."""
    from prometheus_client import start_http_server

    from app import metrics

    start_http_server(port, addr=host, registry=metrics.REGISTRY)
    err.print(f"worker metrics on http://{host}:{port}/metrics")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
) -> None:
    """Run the HTTP API."""
    import uvicorn

    from app.api.app import create_app

    settings = _settings()
    log.configure_from(settings)
    _require_current_schema(settings)
    api = create_app(settings)
    freeze_startup_heap()
    uvicorn.run(api, host=host, port=port, log_config=None)  # app.log's


@app.command()
def run(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8000,
    concurrency: Annotated[int | None, typer.Option(min=1, help="Handler threads.")] = None,
) -> None:
    """Migrate, then run the API and a worker in one process (the embedded default)."""
    import uvicorn

    from app.api.app import create_app

    settings = _settings()
    log.configure_from(settings)
    applied = migrations.apply(settings.database_url, settings.migrations_dir)
    err.print(f"database {settings.database_url}: applied {len(applied)} migration(s)")
    stop = threading.Event()
    the_worker = _start_worker(settings, concurrency, stop)
    api = create_app(settings, wake=the_worker.wake)
    freeze_startup_heap()
    thread = threading.Thread(target=the_worker.run, args=(stop,), name="handoff-worker")
    thread.start()
    err.print(
        f"Handoff API on http://{host}:{port} (OpenAPI at /docs, dashboard at /ops); worker running"
    )
    if settings.auth_enabled:
        err.print(
            "API calls need a bearer token; create one with:\n"
            "  handoff tokens create --name me --scope admin"
        )
    else:
        err.print("[bold red]AUTH IS OFF (HANDOFF_AUTH_ENABLED=false): the API is open[/]")
    try:
        uvicorn.run(api, host=host, port=port, log_config=None)
    finally:
        stop.set()
        thread.join()


def _read_jsonl(path: Path) -> Iterator[tuple[int, ScrapeSubmission]]:
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield number, ScrapeSubmission.model_validate_json(line)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"]) or "record"
                raise typer.BadParameter(f"{path}:{number}: {where}: {first['msg']}") from exc


@app.command()
def submit(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A JSONL file.")],
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Records per transaction.")] = 100,
    inline: Annotated[bool, typer.Option(help="Ingest right here after submitting.")] = False,
) -> None:
    """Push scrape records from a JSONL file (one record per line). The whole file is
    validated before anything is written, so a bad line writes nothing."""
    settings = _settings()
    _require_current_schema(settings)
    for number, sub in _read_jsonl(path):  # first pass: check every line, write nothing
        try:
            scrape_storage.prepare_all(
                [sub], now=SystemClock().now(), max_body_bytes=settings.max_body_bytes, batch=False
            )
        except HandoffError as exc:
            raise typer.BadParameter(f"{path}:{number}: {exc.message}") from exc
    db, clock = Database(settings.database_url), SystemClock()
    tally: dict[str, int] = {}
    chunk: list[ScrapeSubmission] = []

    def flush() -> None:
        now = clock.now()
        prepared = scrape_storage.prepare_all(
            chunk, now=now, max_body_bytes=settings.max_body_bytes
        )
        for r in scrape_storage.submit(db, prepared, now=now, actor="client:cli"):
            tally[r.outcome.value] = tally.get(r.outcome.value, 0) + 1
        chunk.clear()

    try:
        for _, sub in _read_jsonl(path):
            chunk.append(sub)
            if len(chunk) >= batch:
                flush()
        if chunk:
            flush()
    except HandoffError as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(1) from exc
    out.print(json.dumps({"submitted": sum(tally.values()), "outcomes": tally}))
    if inline:
        from app.ingest.pipeline import build_handler

        config = WorkerConfig.from_settings(settings)
        ran = Worker(db, build_handler(settings, db, clock), config=config, clock=clock).drain()
        out.print(json.dumps({"ingested": ran}))


@app.command("import")
def import_(
    paths: Annotated[
        list[Path],
        typer.Argument(exists=True, dir_okay=False, help="JSONL, WARC, WARC.gz, ARC or ARC.gz."),
    ],
    source: Annotated[str, typer.Option(help="Source name for archive records.")] = "warc",
    batch: Annotated[int, typer.Option(min=1, max=1000, help="Records per transaction.")] = 100,
) -> None:
    """Import scrape records from JSONL files (the `submit` format) and web archives,
    streaming and committing in batches. Prints a JSON summary; a truncated or corrupt file
    stops the import (exit 1) with what was committed before it kept."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TextColumn

    settings = _settings()
    _require_current_schema(settings)
    run = importer.Importer(
        Database(settings.database_url),
        SystemClock(),
        source=source,
        max_body_bytes=settings.max_body_bytes,
        batch=batch,
    )
    failed = None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), console=err
    ) as bar:
        for path in paths:
            task = bar.add_task(path.name, total=path.stat().st_size)

            def advance(done: int, task: TaskID = task) -> None:
                bar.update(task, completed=done)

            try:
                run.import_file(path, advance)
            except importer.ImportFailed as exc:
                failed = str(exc)
                break
            except HandoffError as exc:
                failed = f"{path}: {exc.message}"
                break
            bar.update(task, completed=path.stat().st_size)
    run.summary.error = failed
    sys.stdout.write(json.dumps(run.summary.as_json()) + "\n")  # not Rich: no markup, no wrap
    if failed:
        err.print(f"[red]import stopped:[/] {escape(failed)}", soft_wrap=True)
        raise typer.Exit(1)


@app.command()
def search(
    query: Annotated[
        str, typer.Argument(help='Words, "quoted phrases", -excluded, a or b (English stemming).')
    ],
    limit: Annotated[int, typer.Option(min=1, max=documents.MAX_LIMIT)] = 10,
    offset: Annotated[int, typer.Option(min=0, max=documents.MAX_OFFSET)] = 0,
    include_superseded: Annotated[
        bool, typer.Option(help="Also search documents a newer version replaced.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Full-text search over ingested documents, best match first."""
    settings = _settings()
    _require_current_schema(settings)
    try:
        page = Database(settings.database_url).run(
            lambda uow: documents.search(
                uow, query, limit=limit, offset=offset, include_superseded=include_superseded
            ),
            write=False,
        )
    except HandoffError as exc:
        err.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    if as_json:
        body = SearchResultsOut(
            query=page.query,
            limit=page.limit,
            offset=page.offset,
            next_offset=page.next_offset,
            results=[SearchHitOut.from_hit(hit) for hit in page.results],
        )
        out.print_json(body.model_dump_json())
        return
    if not page.results:
        err.print(f"no document matches {query!r}")
        return
    table = Table(title=f"documents matching {query!r}", show_lines=True)
    for column in ("score", "title / url", "reference_id", "snippet"):
        table.add_column(column, overflow="fold")
    for hit in page.results:
        doc = hit.document
        heading = escape(doc.title or "(untitled)") + "\n[dim]" + escape(doc.url or "") + "[/]"
        if not hit.current:
            heading += "\n[yellow]superseded[/]"
        table.add_row(f"{hit.score:.3f}", heading, escape(doc.reference_id), escape(hit.snippet))
    out.print(table)
    if page.next_offset is not None:
        err.print(f"more: --offset {page.next_offset}")


@tokens_app.command("create")
def tokens_create(
    name: Annotated[str, typer.Option(help="Who or what uses the token.")],
    scope: Annotated[list[Scope], typer.Option(help="A scope to grant (repeat for several).")],
) -> None:
    """Create a token and print it once (only its hash is stored)."""
    settings = _settings()
    _require_current_schema(settings)
    token, secret = Database(settings.database_url).run(
        lambda uow: tokens.create(uow, name, scope, now=SystemClock().now())
    )
    err.print(f"token {token.id} ({name}, scopes: {' '.join(sorted(token.scopes))}) — shown once:")
    out.print(secret, soft_wrap=True)


@tokens_app.command("list")
def tokens_list(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """List tokens (never their secrets)."""
    settings = _settings()
    _require_current_schema(settings)
    found = Database(settings.database_url).run(lambda uow: uow.tokens.all(), write=False)
    rows: list[dict[str, object]] = [
        {
            "id": t.id,
            "name": t.name,
            "scopes": " ".join(sorted(t.scopes)),
            "created_at": t.created_at.isoformat(),
            "revoked_at": t.revoked_at.isoformat() if t.revoked_at else None,
        }
        for t in found
    ]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    table = Table(title="API tokens")
    for column in ("id", "name", "scopes", "created_at", "revoked_at"):
        table.add_column(column)
    for r in rows:
        table.add_row(
            *(str(r[c] or "") for c in ("id", "name", "scopes", "created_at", "revoked_at"))
        )
    out.print(table)


@tokens_app.command("revoke")
def tokens_revoke(token_id: Annotated[int, typer.Argument(help="The token's id.")]) -> None:
    """Revoke a token: it stops working at once."""
    settings = _settings()
    _require_current_schema(settings)
    revoked = Database(settings.database_url).run(
        lambda uow: tokens.revoke(uow, token_id, now=SystemClock().now())
    )
    out.print(f"revoked token {revoked.id} ({revoked.name})")


def main() -> None:
    try:
        app()
    except HandoffError as exc:
        err.print(f"[red]{exc.message}[/]")
        sys.exit(1)
