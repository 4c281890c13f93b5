"""Subscribers: lists, subscribers on them, their consent, and the addresses never mailed.

``lists``, ``subscriptions``, ``consent`` (double opt-in, unsubscribing, preferences),
``directory`` (search and edit across lists), ``addresses`` (validation and the one normal
form), ``tokens`` (the signed links in every email), ``importing``, ``import_jobs``,
``exporting`` and ``csv_cells`` (CSV in and out), ``confirmation_requests``, ``automations`` and
``automation_mails`` (a list's welcome, sequence and goodbye, and who is due which, once),
``bounces`` (what a bounce or complaint does) and ``suppressions``. A top-level package by the project's
specification, it is domain code at the level of newsletter.access: it may import
newsletter.store and the foundation (newsletter.errors, config, logs, resources) only.
"""
