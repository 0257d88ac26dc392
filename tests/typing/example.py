# pyright: strict
"""A small program that uses smtpd the way its users do.

It exists for the type checkers: run_typecheck.py checks it with
"mypy --strict" and pyright in strict mode against the smtpd stubs, and then
runs it, so the example is known to work as well as to type-check.

The program starts an SMTP server on a free loopback port, with a channel
that knows one extra command (XHELLO) and a process_message() that keeps
what it receives, talks to it with smtplib, and stops the loop with
asyncore.close_all().
"""

# On Python 3.12+ asyncore comes from pyasyncore, which ships no types: mypy
# is told so in mypy.ini, pyright here and where asyncore is used.
import smtplib
import sys
import threading
from typing import Any, NamedTuple

import asyncore  # pyright: ignore[reportMissingTypeStubs]

import smtpd


class Message(NamedTuple):
    """One message as process_message() received it."""

    peer: Any
    mailfrom: str
    rcpttos: list[str]
    data: bytes
    mail_options: list[str]


class XHelloChannel(smtpd.SMTPChannel):
    """An SMTP channel with one extra command, XHELLO [name]."""

    def smtp_XHELLO(self, arg: str | None) -> None:
        if not self.seen_greeting:
            self.push("503 Error: send HELO first")
            return
        self.push("250 Hello %s" % (arg or self.seen_greeting))


class RecordingServer(smtpd.SMTPServer):
    """Keeps every message; refuses those whose text says "spam"."""

    channel_class = XHelloChannel

    def __init__(self, localaddr: tuple[str, int], socket_map: dict[int, Any]) -> None:
        self.messages: list[Message] = []
        super().__init__(localaddr, None, data_size_limit=None, map=socket_map)

    def process_message(
        self,
        peer: Any,
        mailfrom: str,
        rcpttos: list[str],
        data: bytes | str,
        **kwargs: Any,
    ) -> str | None:
        # decode_data=False (the default): data is bytes and kwargs holds
        # the MAIL and RCPT parameters.
        if isinstance(data, str):
            data = data.encode("utf-8")
        if b"spam" in data:
            return "550 No spam, thanks"
        mail_options: list[str] = kwargs.get("mail_options", [])
        self.messages.append(Message(peer, mailfrom, rcpttos, data, mail_options))
        return None


def serve(socket_map: dict[int, Any]) -> None:
    """Run the asyncore loop until every dispatcher in socket_map is closed."""
    # poll(), unlike select(), does not fail on a descriptor that another
    # thread closed under it (see main's close_all).
    asyncore.loop(timeout=0.05, use_poll=True, map=socket_map)  # pyright: ignore[reportUnknownMemberType]


def main() -> int:
    socket_map: dict[int, Any] = {}
    server = RecordingServer(("127.0.0.1", 0), socket_map)
    assert server.socket is not None
    host, port = server.socket.getsockname()[:2]
    loop = threading.Thread(target=serve, args=(socket_map,), daemon=True)
    loop.start()
    try:
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo("example.org")
            hello = client.docmd("XHELLO", "typing")
            client.sendmail(
                "alice@example.org",
                ["bob@example.org"],
                b"Subject: hi\r\n\r\nHello, Bob.\r\n",
                mail_options=["BODY=8BITMIME"],
            )
            try:
                client.sendmail("eve@example.org", ["bob@example.org"], "buy spam")
            except smtplib.SMTPDataError as refusal:
                spam_reply = (refusal.smtp_code, refusal.smtp_error)
            else:
                spam_reply = (250, b"")
    finally:
        # Closing every dispatcher empties the map, which ends asyncore.loop().
        asyncore.close_all(map=socket_map)  # pyright: ignore[reportUnknownMemberType]
        loop.join(timeout=10)

    assert hello == (250, b"Hello typing"), hello
    assert spam_reply == (550, b"No spam, thanks"), spam_reply
    [message] = server.messages
    assert message.mailfrom == "alice@example.org", message
    assert message.rcpttos == ["bob@example.org"], message
    assert message.data == b"Subject: hi\n\nHello, Bob.", message
    assert message.mail_options == ["BODY=8BITMIME"], message
    assert not loop.is_alive(), "asyncore.loop() did not stop"
    print("example: ok, %d message(s) received" % len(server.messages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
