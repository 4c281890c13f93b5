"""The subscriber web app: subscribe, confirm, unsubscribe, preferences, archive.

``app.create_app(settings)`` builds the FastAPI app; ``newsletter web`` serves it with
uvicorn. One module per resource holds its thin handlers; ``context`` is what they share
(settings, database sessions, the token signer, the page templates in ``templates/web/``)
and ``errors`` is the one place where errors become HTTP status codes.
"""
