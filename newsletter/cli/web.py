"""`newsletter web`: the web app (subscriber pages, admin UI and API, metrics)."""

from __future__ import annotations

import typer

from newsletter.cli.runtime import err, runtime


def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
) -> None:
    """Serve the subscriber pages, the admin UI (/admin/), the admin API (/api/) and /metrics (Ctrl-C to stop).

    Put it behind a TLS-terminating reverse proxy at NEWSLETTER_BASE_URL; X-Forwarded-For and
    X-Forwarded-Proto are believed only from the proxies in NEWSLETTER_TRUSTED_PROXIES (none by default).
    """
    import uvicorn

    from newsletter import logs
    from newsletter.http.app import create_app
    from subscribers.import_jobs import fail_interrupted_jobs

    settings = runtime.settings
    app = create_app(settings, sessions=runtime.sessions)  # refuses a missing or outdated schema first
    with runtime.transaction() as session:
        interrupted = fail_interrupted_jobs(session)  # imports this process ran before it stopped
    if interrupted:
        err.print(f"{interrupted} CSV import(s) were interrupted by the last stop; they are marked failed.")
    err.print(f"Serving {settings.base_url} on http://{host}:{port}")
    logs.configure(settings.log_format)
    # proxy_headers=False: the app alone judges X-Forwarded-* (NEWSLETTER_TRUSTED_PROXIES); uvicorn's own
    # FORWARDED_ALLOW_IPS (127.0.0.1 by default) would believe any local process.
    uvicorn.run(app, host=host, port=port, proxy_headers=False, server_header=False, log_level="info", log_config=None)
