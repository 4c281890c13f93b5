"""The admin UI under /admin/: server-rendered pages for editors and admins."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/admin", include_in_schema=False)
