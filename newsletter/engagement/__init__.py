"""Engagement: what a tracked send's readers did (opens and clicks), counted honestly and privately.

A list's ``tracking`` is ``off`` (the default: no pixel, links as written), ``anonymous`` or
``individual``; a send freezes its list's choice when it starts. A tracked send's links are
numbered once (``links``); each worker rewrites them, and adds a 1×1 image, in its compiled
copy of the issue, so the stored issue and its archive keep the real links. ``events`` records
an open or a click, telling machines (privacy proxies, link scanners) from people
(``machines``); ``report`` reads a send's figures; ``rollup`` turns a send's events into hourly
counts when its report window closes and forgets the key that told its readers apart;
``recorder`` is the web app's side (links read once, events written in bulk); ``variant_figures``
counts a subject test's opens and clicks per subject; ``growth`` counts
the lists' weekly growth for the admin dashboard.

May import: newsletter.mail, newsletter.content, subscribers, newsletter.store, the foundation.
"""
