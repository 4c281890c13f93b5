"""The one error tree of the service.

::

    NewsletterError
    ├── ConfigError              a setting is missing or malformed (names the variable)
    ├── InvalidInput             bad data from a user: a file, a row, a field
    │   └── RenderError          an issue cannot be rendered (template error, undefined variable)
    ├── NotFound                 a list, subscriber, issue or send does not exist
    ├── Conflict                 the change clashes with what is stored (duplicate slug, wrong state)
    └── DeliveryError            one message could not be handed to the SMTP server
        ├── TemporaryDeliveryError   4xx reply or connection trouble: try again later
        │   └── SmtpUnreachable      no session with the server at all (connect, TLS, login)
        └── PermanentDeliveryError   5xx reply: this recipient fails for good
            └── UnknownRecipient     the mailbox does not exist (a hard bounce: suppress the address)

The domain raises these; each edge (CLI, web, worker) decides once how to show them
(exit code, HTTP status, retry).
"""

from __future__ import annotations


class NewsletterError(Exception):
    """Base class of every error the service raises on purpose."""


class ConfigError(NewsletterError):
    """A setting is missing or malformed. The message names the variable."""


class InvalidInput(NewsletterError):
    """Bad input from a user. ``where`` names the file, line or field when known."""

    def __init__(self, message: str, *, where: str | None = None) -> None:
        self.message = message
        self.where = where
        super().__init__(f"{where}: {message}" if where else message)


class RenderError(InvalidInput):
    """An issue cannot be rendered for its recipients."""


class NotFound(NewsletterError):
    """The thing asked for does not exist."""


class Conflict(NewsletterError):
    """The request clashes with stored state (duplicate key, wrong status)."""


class DeliveryError(NewsletterError):
    """One message could not be delivered to the SMTP server."""

    def __init__(self, message: str, *, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class TemporaryDeliveryError(DeliveryError):
    """A 4xx reply or a connection problem: retry later."""


class SmtpUnreachable(TemporaryDeliveryError):
    """The SMTP server could not be reached or refused the session (connect, TLS, login): not
    about any recipient. The message names host:port and the reason; ``code`` is None."""


class PermanentDeliveryError(DeliveryError):
    """A 5xx reply: do not retry this recipient."""


class UnknownRecipient(PermanentDeliveryError):
    """The server said the recipient's mailbox does not exist (a hard bounce): the address is
    suppressed. The transport decides (see ``newsletter.mail.transport.is_unknown_user``)."""
