"""The JSON admin API under /api/, described by the app's OpenAPI schema at /openapi.json."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/api")
