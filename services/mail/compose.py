"""Builds the multipart/alternative MIME message for one row of the message log."""

from __future__ import annotations

from email.message import EmailMessage as MimeMessage
from email.utils import format_datetime, formataddr, make_msgid, parseaddr

from models.contracts.common import sendable_address
from models.emails import EmailMessage


def compose(message: EmailMessage, mail_from: str) -> MimeMessage:
    mime = MimeMessage()
    mime["From"] = mail_from
    # Rows logged before addresses were stored in their ASCII form may hold a Unicode domain,
    # which the SMTP encoder refuses; the ASCII form reaches the same mailbox.
    mime["To"] = formataddr((message.to_name, sendable_address(message.to_address)))
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(message.created_at)
    sender_domain = parseaddr(mail_from)[1].rpartition("@")[2] or None
    mime["Message-ID"] = make_msgid(idstring=message.id, domain=sender_domain)
    # Lets a receiving system (and our tests) see that two deliveries are the same email.
    mime["X-Clientflow-Idempotency-Key"] = message.idempotency_key
    mime["X-Clientflow-Event-Id"] = message.event_id
    mime["X-Clientflow-Template"] = message.template
    mime.set_content(message.body_text)
    mime.add_alternative(message.body_html, subtype="html")
    return mime
