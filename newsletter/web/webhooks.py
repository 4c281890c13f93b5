"""Provider event webhooks (bounces and complaints): Amazon SES through SNS, and a generic JSON form."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/webhooks", include_in_schema=False)
