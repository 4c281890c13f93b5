"""What a test reads out of text and mail: a pattern's match and a message's body, or a failed assertion.

``re.search`` and ``EmailMessage.get_body`` may find nothing; these say so as the test's failure
(and give the type checker a value that is there).
"""

from __future__ import annotations

import re
from email.message import EmailMessage


def must_match(match: re.Match[str] | None) -> re.Match[str]:
    """The match a test expects."""
    assert match is not None, "the pattern matched nothing"
    return match


def body_text(message: EmailMessage, subtype: str = "plain") -> str:
    """The text of the message's text/``subtype`` body (plain or html)."""
    part = message.get_body((subtype,))
    assert part is not None, f"the message has no text/{subtype} body"
    content: str = part.get_content()
    return content
