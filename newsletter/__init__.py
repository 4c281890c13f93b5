"""Email newsletter distribution: lists, rendering, and crash-safe batched sending."""

__version__ = "0.1.0"
