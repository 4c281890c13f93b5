"""A send's edition: its frozen issue compiled once per worker process, and each recipient's copy.

:class:`SendEditions` is the batch loop's :class:`~newsletter.delivery.ports.MessageSource`.
It compiles a send's message the first time a batch of that send comes by (the last few
sends are kept), with the Message-ID key derived from the secret key, so no recipient can
work out another's Message-ID from their own. A :class:`SendEdition` makes one recipient's
copy: their signed links filled in (a few HMACs and string joins), signed with DKIM and
given its envelope sender by ``outbound``. A send with a subject test has its message under both
subjects, and each copy takes the one its row's variant names.
"""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from newsletter.content.issues import Links
from newsletter.delivery import subject_variants
from newsletter.delivery.ports import Claimed, Copy
from newsletter.delivery.sending import RecipientLinks, compile_message, get_send
from newsletter.mail.messages import CompiledMessage, ascii_address
from newsletter.mail.outbound import PLAIN, Outbound
from newsletter.store.models import Send, SubjectTest
from newsletter.store.states import Tracking
from subscribers.tokens import TokenSigner


class SendEdition:
    """One send's compiled message and what its recipients' copies need (an Edition)."""

    def __init__(
        self,
        message: CompiledMessage,
        list_id: int,
        issue_id: int,
        links: RecipientLinks,
        outbound: Outbound,
        *,
        tracked_send: int | None = None,
        subject_b: str | None = None,
    ) -> None:
        self.message = message
        # A subject test's other variant: the same message under the other Subject (its header compiled once).
        self.variant_b = message.with_subject(subject_b) if subject_b is not None else None
        self.list_id, self.issue_id = list_id, issue_id
        self.tracked_send = tracked_send  # the send's id when its copies carry a tracking token
        self.links = links
        self.outbound = outbound

    @property
    def key(self) -> str:
        return self.message.headers.message_id_tag

    def message_id(self, delivery_id: int) -> str:
        return self.message.message_id(delivery_id)

    def copy(self, row: Claimed) -> Copy:
        message = self.message
        if row.variant == subject_variants.B:
            if self.variant_b is None:
                raise RuntimeError(f"delivery {row.delivery_id} has subject B but its send has no subject test")
            message = self.variant_b
        recipient = self.links.recipient(message, self.list_id, self.issue_id, row, tracked_send=self.tracked_send)
        message_id, data = message.build(recipient)
        return Copy(
            message_id,
            self.outbound.envelope_from(message, row.delivery_id),
            ascii_address(row.email),
            self.outbound.seal(data),
        )


class SendEditions:
    """Each send's edition, made once per process (a MessageSource); keeps the last ``keep``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        signer: TokenSigner,
        links: Links,
        outbound: Outbound = PLAIN,
        *,
        keep: int = 8,
    ) -> None:
        self.sessions = sessions
        self.recipient_links = RecipientLinks(signer, links)
        self.message_id_key = signer.derived_key("message-id")
        self.outbound = outbound
        self.keep = keep
        self._editions: dict[int, SendEdition] = {}

    def edition(self, send_id: int) -> SendEdition:
        """Raises NotFound (the send was deleted)."""
        made = self._editions.get(send_id)
        if made is not None:
            return made
        with self.sessions() as session:
            return self.edition_of(session, get_send(session, send_id))

    def edition_of(self, session: Session, send: Send) -> SendEdition:
        """The edition of ``send``, compiled in ``session`` unless it was made before."""
        made = self._editions.get(send.id)
        if made is None:
            if len(self._editions) >= self.keep:
                self._editions.clear()
            base_url = self.recipient_links.links.base_url
            message = compile_message(session, send, message_id_key=self.message_id_key, tracking_base_url=base_url)
            tracked = send.id if send.tracking != Tracking.OFF else None
            test = session.get(SubjectTest, send.id)
            made = SendEdition(
                message,
                send.list_id,
                send.issue_id,
                self.recipient_links,
                self.outbound,
                tracked_send=tracked,
                subject_b=test.subject_b if test is not None else None,
            )
            self._editions[send.id] = made
        return made
