"""Email newsletter distribution: lists, rendering, and crash-safe batched sending.

One room per concern, the import graph pointing down only (docs/architecture.md, checked by
``lint-imports``): the edges ``cli``, ``http`` and ``worker``; ``runtime``, the composition root
they share; ``devtools``; the domain (``delivery``, ``feedback``, ``mail``, ``content``,
``access`` and the top-level ``subscribers`` package); ``store``; and the foundation modules
``config``, ``errors``, ``logs``, ``resources`` and ``until_stopped``.
"""

__version__ = "0.1.0"
