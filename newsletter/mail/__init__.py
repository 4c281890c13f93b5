"""Mail: a rendered issue turned into bytes on the wire, and the wire itself.

``messages`` builds the MIME structure once per send and each recipient's copy as a join of
pre-encoded bytes; ``dkim_keys`` and ``dkim_signing`` make and use the signing key;
``return_path`` gives every delivery its VERP envelope sender; ``outbound`` applies both to an
outgoing message; ``transport`` is the SMTP transport (one reused connection) behind the
interface sending talks to, raising temporary or permanent delivery errors; ``smtp_listener``
is what the SMTP servers share; ``doctor`` checks the configuration against the bulk-sender
rules. It may import content, subscribers, access, store and the foundation; never delivery,
feedback, the dev tools or an edge.
"""
