"""Normalising and hashing identifiers on the advertiser's side, so only salted hashes leave
it: emails and phone numbers are normalised (the same person's "John.Smith@X.com " and
"john.smith@x.com" hash alike) and hashed with HMAC-SHA256 under a salt the advertiser and
openbid share for one collaboration (never stored beside the data).

| identifier | normalisation before hashing |
| --- | --- |
| email | trimmed, lower case; for gmail.com / googlemail.com, dots and `+tag` of the local part dropped |
| phone | digits only; a national number gets `default_country_code`; a leading `00` becomes the `+` form |

>>> normalise_email("  John.Smith+news@GoogleMail.com ")
'johnsmith@gmail.com'
>>> normalise_phone("(020) 7946-0958", default_country_code="44")
'+442079460958'
>>> hash_identifier("a@b.com", salt=b"0123456789abcdef") == hash_identifier(" A@B.com", salt=b"0123456789abcdef")
True
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import unicodedata
from collections.abc import Callable, Mapping

import pyarrow as pa

from openbid.insights.errors import InsightsError

MIN_SALT_BYTES = 16
_GMAIL = {"gmail.com", "googlemail.com"}
_NOT_DIGIT = re.compile(r"\D+")
_SPACES = re.compile(r"\s+")


def normalise_email(value: str | None) -> str | None:
    """An email in the form its hash is computed from; None when it is not an email."""
    if value is None:
        return None
    email = value.strip().lower()
    local, at, domain = email.rpartition("@")
    if not at or not local or "." not in domain:
        return None
    if domain in _GMAIL:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


def normalise_phone(value: str | None, *, default_country_code: str = "") -> str | None:
    """A phone number as `+<digits>`; None when it has too few digits to be one."""
    if value is None:
        return None
    text = value.strip()
    digits = _NOT_DIGIT.sub("", text)
    if text.startswith("+"):
        pass
    elif digits.startswith("00"):
        digits = digits[2:]
    elif default_country_code:
        digits = default_country_code + digits.lstrip("0")
    if len(digits) < 7:
        return None
    return "+" + digits


def normalise_name(value: str | None) -> str | None:
    """A name without accents, in lower case, single-spaced (for matching, never hashed)."""
    if value is None:
        return None
    text = unicodedata.normalize("NFKD", value)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = _SPACES.sub(" ", text).strip().lower()
    return text or None


def load_salt(*, env: str = "OPENBID_IDENTITY_SALT", path: str | None = None) -> bytes:
    """The collaboration's salt from a file or an environment variable (never a default)."""
    if path:
        try:
            with open(path, "rb") as handle:
                salt = handle.read().strip()
        except OSError as exc:
            raise InsightsError(f"cannot read the salt file {path}: {exc}") from None
    else:
        salt = os.environ.get(env, "").encode()
    if len(salt) < MIN_SALT_BYTES:
        where = path or f"${env}"
        raise InsightsError(f"the identity salt ({where}) must be at least {MIN_SALT_BYTES} bytes")
    return salt


def hash_identifier(
    value: str | None, *, salt: bytes, kind: str = "email", **options: str
) -> str | None:
    """HMAC-SHA256 (hex) of the normalised identifier; None when it normalises to nothing."""
    if len(salt) < MIN_SALT_BYTES:
        raise InsightsError(f"the identity salt must be at least {MIN_SALT_BYTES} bytes")
    normalisers: Mapping[str, Callable[..., str | None]] = {
        "email": normalise_email,
        "phone": normalise_phone,
    }
    if kind not in normalisers:
        raise InsightsError(f"unknown identifier kind {kind!r}; expected email or phone")
    normalised = normalisers[kind](value, **options)
    if normalised is None:
        return None
    return hmac.new(salt, normalised.encode("utf-8"), hashlib.sha256).hexdigest()


def hash_records(
    table: pa.Table,
    *,
    salt: bytes,
    email_col: str | None = "email",
    phone_col: str | None = "phone",
    default_country_code: str = "",
) -> pa.Table:
    """`table` with its email and phone columns replaced by `email_hash` and `phone_hash`
    (the raw columns are dropped): what may leave the advertiser's side."""
    out = table
    for column, kind, target in (
        (email_col, "email", "email_hash"),
        (phone_col, "phone", "phone_hash"),
    ):
        if column is None or column not in out.column_names:
            continue
        options = {"default_country_code": default_country_code} if kind == "phone" else {}
        hashed = [
            hash_identifier(None if v is None else str(v), salt=salt, kind=kind, **options)
            for v in out[column].to_pylist()
        ]
        index = out.column_names.index(column)
        out = out.remove_column(index).add_column(index, target, pa.array(hashed, pa.string()))
    return out
