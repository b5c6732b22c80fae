"""Keep credentials out of every message built from what a server sent.

A hostile or merely careless server (a proxy quoting the request, a login
page, Prometheus behind an auth gateway) can echo our request back: in an
error message, a warning, a label, a redirect's Location. What it echoes is
not necessarily the secret as we read it from its file: the Authorization
header carries ``Bearer <token>`` or the base64 of ``user:password``, a
Location carries it URL-encoded, a text body may carry it JSON-escaped.
SecretMask knows every such form of every secret that is sent.

It must be applied to the raw server text first, before the text is
shortened, its whitespace collapsed or it is repr()-quoted: a secret cut in
half, or with its backslashes doubled, is no longer recognised.
"""

from __future__ import annotations

import base64
import json
import urllib.parse

# Shorter "secrets" are not masked: replacing a one-character password
# everywhere would mangle the message and protect nothing.
MIN_MASK_LENGTH = 4
MASK = "***"


def _forms(secret: str) -> set[str]:
    """Given a secret, return the forms in which a server may echo it."""
    forms = {
        secret,
        urllib.parse.quote(secret, safe=""),
        urllib.parse.quote(secret),
        urllib.parse.quote_plus(secret),
        urllib.parse.unquote(secret),
        urllib.parse.unquote_plus(secret),
        # As a JSON document would quote it (a text body echoing the headers as JSON).
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
    }
    encoded = secret.encode("utf-8")
    forms.add(base64.b64encode(encoded).decode("ascii"))
    forms.add(base64.b64encode(encoded).decode("ascii").rstrip("="))
    return forms


class SecretMask:
    """The secrets one client sends, in every form, and the one function that hides them."""

    def __init__(self) -> None:
        self._forms: set[str] = set()

    def add(self, secret: str) -> None:
        """Given a secret that is sent (a token, a password, a header value), mask it in every form."""
        if len(secret) < MIN_MASK_LENGTH:
            return
        self._forms.update(form for form in _forms(secret) if len(form) >= MIN_MASK_LENGTH)

    def add_basic(self, username: str, password: str) -> None:
        """
        Given basic-auth credentials, mask the password and the base64 of
        ``username:password`` that the Authorization header carries.
        """
        self.add(password)
        self.add(f"{username}:{password}")

    def mask(self, text: str) -> str:
        """Given raw text from a server (or a message built from it), return it with every secret form replaced."""
        # Longest first, so a short form never breaks up a longer one it is part of.
        for form in sorted(self._forms, key=len, reverse=True):
            text = text.replace(form, MASK)
        return text

    def __bool__(self) -> bool:
        return bool(self._forms)
