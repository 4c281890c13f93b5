"""`newsletter web`: the subscriber web app (subscribe, confirm, unsubscribe, preferences, archive)."""

from __future__ import annotations

import typer

from newsletter.cli.runtime import err, runtime


def web(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
) -> None:
    """Serve the subscriber pages with uvicorn (Ctrl-C to stop).

    Put it behind a TLS-terminating reverse proxy at NEWSLETTER_BASE_URL; X-Forwarded-For
    is trusted from the proxies uvicorn trusts (FORWARDED_ALLOW_IPS, default 127.0.0.1).
    """
    import uvicorn

    from newsletter.web.app import create_app

    settings = runtime.settings
    app = create_app(settings, sessions=runtime.sessions)  # refuses a missing or outdated schema first
    err.print(f"Serving {settings.base_url} on http://{host}:{port}")
    uvicorn.run(app, host=host, port=port, proxy_headers=True, server_header=False, log_level="info")
