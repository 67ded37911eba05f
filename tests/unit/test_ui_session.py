"""The dashboard's session cookie: valid for the admin token that signed it, until it expires, and for nothing else."""

from __future__ import annotations

import jwt

from interfaces.http.ui_session import AUDIENCE, SESSION_SECONDS, _key, new_session, valid_session

ISSUED = 1_800_000_000.0


def test_a_session_holds_until_it_expires():
    cookie = new_session("admin-token", ISSUED)
    assert valid_session("admin-token", cookie, ISSUED)
    assert valid_session("admin-token", cookie, ISSUED + SESSION_SECONDS - 1)
    assert not valid_session("admin-token", cookie, ISSUED + SESSION_SECONDS)
    assert not valid_session("admin-token", cookie, ISSUED - 60)   # issued in the future: a clock or a forgery


def test_a_new_admin_token_ends_every_session_and_edits_are_refused():
    cookie = new_session("admin-token", ISSUED)
    assert not valid_session("rotated-token", cookie, ISSUED + 1)
    header, claims, signature = cookie.split(".")
    assert not valid_session("admin-token", f"{header}.{claims}.{signature[:-2]}AA", ISSUED + 1)
    for junk in (None, "", "a.b.c", "x" * 2000):
        assert not valid_session("admin-token", junk, ISSUED + 1)


def test_a_token_signed_for_another_purpose_or_without_expiry_is_no_session():
    key = _key("admin-token")
    other = jwt.encode({"aud": "entrepot", "iat": int(ISSUED), "exp": int(ISSUED) + 60}, key, algorithm="HS256")
    no_expiry = jwt.encode({"aud": AUDIENCE, "iat": int(ISSUED)}, key, algorithm="HS256")
    unsigned = jwt.encode({"aud": AUDIENCE, "iat": int(ISSUED), "exp": int(ISSUED) + 60}, None, algorithm="none")
    for cookie in (other, no_expiry, unsigned):
        assert not valid_session("admin-token", cookie, ISSUED + 1)
