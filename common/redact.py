"""The one secret redactor: what a run's config may show once it leaves the process.

Used twice with the same rules: the server masks the config it stores with a run
(so secrets never reach the database), and the dashboard masks whatever config
it reads (a run stored before a rule existed is still shown masked). Pure: no
I/O, no imports from the server or the client.

Rules (a value is masked if any applies):

* a non-empty value under a secret-looking key, at any depth (``join_token``,
  ``password``, ``db.secret``, ``api_key``, ``private_key``, ``credentials`` ...);
  the key's last word decides, so ``max_new_tokens`` stays;
* the password of every ``scheme://user:password@`` in a string, as SQLAlchemy
  parses it: everything between the first ``:`` after the user and the next ``@``
  (so also a password with ``/`` in it, or an empty one).
"""

from __future__ import annotations

import re
from typing import Any

REDACTED = "***"
SECRET_KEY_RE = re.compile(
    r"(^|[_.-])(token|secret|password|passwd|credentials?|api_?key|private_key)$", re.IGNORECASE
)
URL_PASSWORD_RE = re.compile(r"(://[^:/@]+:)[^@]*@")


def redact_url(text: str) -> str:
    """``text`` with the password of every URL in it masked."""
    return URL_PASSWORD_RE.sub(rf"\g<1>{REDACTED}@", text)


def redact(value: Any, key: str = "") -> Any:
    """A copy of ``value`` (dicts and lists walked) with secrets masked; ``key`` names the value."""
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v, key) for v in value)
    if key and SECRET_KEY_RE.search(key) and value not in (None, "", False):
        return REDACTED
    if isinstance(value, str):
        return redact_url(value)
    return value
