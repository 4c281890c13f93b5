"""The web edge: one FastAPI app serving the subscriber site, the admin API and the admin UI.

``app`` builds the app from Settings and mounts the three siblings ``site`` (public pages and
webhooks), ``api`` (JSON under /api/) and ``admin`` (pages under /admin/), which never import
one another. ``body_limits``, the middleware in front of them all, checks who is asking and
caps every body before it is read. What the siblings share lives below them: ``callers`` (the
API token and admin session checks), ``uploads`` (a CSV written to disk as it arrives),
``errors`` (the one place errors become status codes), ``context`` (the runtime's settings,
sessions and signer, page templates), ``headers`` and ``ratelimit``. An edge: it may import the
runtime, the dev tools, the domain, the store and the foundation; never its sibling
newsletter.worker (tasks are queued by name through the runtime), nor newsletter.cli, which
starts it.
"""
