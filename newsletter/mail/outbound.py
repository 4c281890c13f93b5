"""What every outgoing message gets on its way out: its DKIM signature and its envelope sender.

Every path that mails someone (a send's deliveries, test sends, confirmation emails) builds
its message with :class:`~newsletter.mail.messages.CompiledMessage`, then hands it through one
:class:`Outbound`, built once per process from the settings:

* with ``NEWSLETTER_DKIM_*`` set, the message gets a DKIM-Signature field
  (:mod:`newsletter.mail.dkim_signing`);
* with ``NEWSLETTER_RETURN_PATH`` set, a delivery's envelope sender (MAIL FROM, the
  Return-Path) is its own VERP address, ``bounces+d1234-HMAC@domain``
  (:mod:`newsletter.mail.return_path`), so its bounce names it; mail that is not a delivery
  (test sends, confirmations) goes out from the plain return path address. Unset, the
  envelope sender is the list's From address.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from newsletter.config import Settings
from newsletter.mail.messages import CompiledMessage
from newsletter.mail.return_path import make_return_path

if TYPE_CHECKING:  # dkimpy and cryptography load only where DKIM is configured
    from newsletter.mail.dkim_signing import DkimSigner


@dataclass(frozen=True)
class Outbound:
    signer: DkimSigner | None = None
    return_path: str | None = None
    return_path_key: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> Outbound:
        """Reads the DKIM key once. Raises ConfigError naming the setting when the key cannot be used."""
        if settings.dkim is None:
            return cls(return_path=settings.return_path, return_path_key=settings.secret_key)
        from newsletter.mail.dkim_signing import DkimSigner

        signer = DkimSigner.from_settings(settings.dkim)
        return cls(signer=signer, return_path=settings.return_path, return_path_key=settings.secret_key)

    def envelope_from(self, message: CompiledMessage, delivery_id: int | None = None) -> str:
        """The SMTP envelope sender of ``message``; ``delivery_id`` for a send's delivery, None for other mail."""
        if self.return_path is None:
            return message.envelope_from
        if delivery_id is None:
            return self.return_path
        return make_return_path(self.return_path, delivery_id, self.return_path_key)

    def seal(self, data: bytes) -> bytes:
        """The message as it goes out: signed when DKIM is configured."""
        return data if self.signer is None else self.signer.sign(data)


PLAIN = Outbound()  # unsigned, envelope sender = the From address
