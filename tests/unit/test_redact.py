"""The one secret redactor (``lada.common.redact``): every rule, at any depth, and what it leaves alone.

Each rule has a test that fails when the rule is removed: the secret key words
(and their separators), the empty-value exemption, the URL password (also with
``/`` in it, or empty), and that non-secrets come back unchanged.
"""

from __future__ import annotations

import copy

import pytest
from lada.common.config import LadaConfig
from lada.common.redact import REDACTED, redact, redact_url

SECRET_KEYS = ["token", "secret", "password", "passwd", "credential", "credentials", "api_key", "apikey",
               "private_key", "join_token", "db.password", "aws-secret", "API_KEY", "Join_Token"]
PLAIN_KEYS = ["max_new_tokens", "token_budget", "tokenizer", "secretary", "password_hint", "key", "tls_key",
              "public_key", "name", "db"]


@pytest.mark.parametrize("key", SECRET_KEYS)
def test_secret_keys_are_masked_at_any_depth(key: str) -> None:
    conf = {key: "s3cret", "a": {key: "s3cret", "b": [{key: 42}, {"c": {key: ["x", "y"]}}]}}
    assert redact(conf) == {key: REDACTED,
                            "a": {key: REDACTED, "b": [{key: REDACTED}, {"c": {key: [REDACTED, REDACTED]}}]}}


@pytest.mark.parametrize("key", PLAIN_KEYS)
def test_plain_keys_are_left_alone(key: str) -> None:
    conf = {key: "value", "nested": {key: 7, "list": [{key: "v"}]}}
    assert redact(conf) == conf


@pytest.mark.parametrize("empty", [None, "", False])
def test_an_unset_secret_shows_as_unset(empty: object) -> None:
    """An empty token is shown as empty: masking it would hide that it is unset."""
    assert redact({"join_token": empty}) == {"join_token": empty}


@pytest.mark.parametrize(("url", "want"), [
    ("postgresql://lada:hunter2@db:5432/lada", "postgresql://lada:***@db:5432/lada"),
    ("postgresql+psycopg://u:p%40ss@10.0.0.1/x?sslmode=require", "postgresql+psycopg://u:***@10.0.0.1/x?sslmode=require"),
    ("postgresql://u:pa/ss@db/lada", "postgresql://u:***@db/lada"),  # SQLAlchemy reads 'pa/ss' as the password
    ("postgresql://u:@db/lada", "postgresql://u:***@db/lada"),
    ("a=mysql://a:b@h1/d, b=redis://c:d@h2/0", "a=mysql://a:***@h1/d, b=redis://c:***@h2/0"),
])
def test_url_passwords_are_masked(url: str, want: str) -> None:
    assert redact_url(url) == want
    assert redact({"server": {"db": url}, "urls": [url]}) == {"server": {"db": want}, "urls": [want]}


@pytest.mark.parametrize("text", [
    "sqlite:///.lada/lada.db",
    "postgresql://db:5432/lada",
    "postgresql://lada@db/lada",
    "127.0.0.1:50051",
    "user:pass but no url",
    "embedded:slm-gpt2",
])
def test_strings_without_a_url_password_are_left_alone(text: str) -> None:
    assert redact_url(text) == text
    assert redact({"v": text}) == {"v": text}


def test_non_strings_and_structure_are_kept_and_the_input_is_not_changed() -> None:
    conf = {"n": 3, "f": 0.5, "b": True, "none": None, "l": [1, "two", None], "t": (1, "postgresql://u:p@h/d"),
            "d": {}, 4: "int key"}
    before = copy.deepcopy(conf)
    out = redact(conf)
    assert conf == before
    assert out == {**conf, "t": (1, "postgresql://u:***@h/d")}
    assert out is not conf and out["l"] is not conf["l"]


def test_a_run_config_loses_exactly_its_secrets() -> None:
    """What the server stores with a run and the dashboard shows: join token and DB password masked,
    every other knob as it was."""
    cfg = LadaConfig.model_validate({"server": {"db": "postgresql://lada:pw@db/lada", "join_token": "join-s3cret"}})
    conf = cfg.model_dump(mode="json")
    out = redact(conf)
    assert out["server"]["join_token"] == REDACTED
    assert out["server"]["db"] == "postgresql://lada:***@db/lada"
    masked = {(sec, k) for sec, vals in conf.items() if isinstance(vals, dict)
              for k in vals if out[sec][k] != vals[k]}
    assert masked == {("server", "join_token"), ("server", "db")}
    assert "join-s3cret" not in repr(out) and ":pw@" not in repr(out)
