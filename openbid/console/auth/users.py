"""Console users in the catalog database: roles and tenants, argon2 password hashes, API
tokens and web sessions stored as SHA-256 of 32 random bytes, login throttling.

A user is an `admin` (everything), an `advertiser` (tenant: an advertiser id) or a
`publisher` (tenant: a publisher id). Security windows (lockouts, session lifetimes) are
real seconds (`now`, default `time.time`), like request deadlines: a sped-up market clock
must not shorten a lockout.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Literal

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from openbid.console.auth.throttle import AddressLimiter, account_locked_until
from openbid.console.tables import SessionRow, TokenRow, UserRow
from openbid.errors import OpenbidError
from openbid.stores.base import StoreError, StoreUnavailable
from openbid.stores.catalog import Catalog
from openbid.stores.sqlbase import UNAVAILABLE

Role = Literal["admin", "advertiser", "publisher"]
ROLES: tuple[Role, ...] = ("admin", "advertiser", "publisher")
USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024


class Principal(msgspec.Struct, frozen=True):
    """Who a request is from: a user, its role, and its tenant (an advertiser or publisher
    id; empty for admins)."""

    user_id: str
    username: str
    role: Role
    tenant_id: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


class UserInfo(msgspec.Struct, frozen=True):
    id: str
    username: str
    role: Role
    tenant_id: str
    disabled: bool
    locked: bool
    created_at: str


class TokenInfo(msgspec.Struct, frozen=True):
    id: str
    name: str
    created_at: str


class LoginRefused(OpenbidError):
    """A login that did not succeed: `reason` is `credentials` (wrong user or password,
    never said which), `locked` (the account) or `throttled` (the address)."""

    def __init__(self, reason: str, retry_after_s: float = 0.0) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        messages = {
            "credentials": "wrong user name or password",
            "locked": "too many wrong passwords: the account is locked for a while",
            "throttled": "too many failed logins from this address: wait and retry",
        }
        super().__init__(messages[reason])


class UserError(OpenbidError, ValueError):
    """A user record refused; `field` names what is wrong."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


def sha256_hex(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    """32 random bytes, URL-safe: a token, a session id, a CSRF token."""
    return secrets.token_urlsafe(32)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def password_errors(password: str) -> str | None:
    if len(password) < MIN_PASSWORD_CHARS:
        return f"at least {MIN_PASSWORD_CHARS} characters"
    if len(password) > MAX_PASSWORD_CHARS:
        return f"at most {MAX_PASSWORD_CHARS} characters"
    return None


class UserStore:
    """Users, tokens and sessions in `catalog`'s database (its engine, migration 0003)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_failures: int = 5,
        lockout_s: float = 900.0,
        ip_max_failures: int = 50,
        session_ttl_s: float = 8 * 3600.0,
        now: Callable[[], float] = time.time,
        hasher: PasswordHasher | None = None,
    ) -> None:
        self.catalog = catalog
        self._sessions = sessionmaker(catalog.engine, expire_on_commit=False)
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.session_ttl_s = session_ttl_s
        self.now = now
        self.hasher = hasher or PasswordHasher()
        self.addresses = AddressLimiter(ip_max_failures, lockout_s)
        # Verified against when the user name is unknown, so a wrong name costs the time a
        # wrong password does (no user enumeration by timing).
        self._dummy_hash = self.hasher.hash(new_secret())

    @contextmanager
    def _session(self, write: bool = False) -> Iterator[Session]:
        try:
            with self._sessions() as session:
                if write:
                    with session.begin():
                        yield session
                else:
                    yield session
        except IntegrityError:
            raise  # a refused row (a name taken), not a database down: the caller says which
        except UNAVAILABLE as exc:
            reason = getattr(exc, "orig", None) or exc
            raise StoreUnavailable(
                f"console users at {self.catalog.engine.url!r}: {reason}"
            ) from exc

    # --- users
    def create_user(self, username: str, password: str, role: str, tenant_id: str = "") -> UserInfo:
        if not USERNAME_RE.fullmatch(username):
            raise UserError("username", "1-64 letters, digits, '.', '_', '@', '-'")
        problem = password_errors(password)
        if problem:
            raise UserError("password", problem)
        if role not in ROLES:
            raise UserError("role", f"{role!r} is not one of {', '.join(ROLES)}")
        if role == "admin" and tenant_id:
            raise UserError("tenant_id", "an admin has no tenant")
        if role != "admin" and not tenant_id:
            raise UserError("tenant_id", f"a {role} user needs the id of its {role}")
        row = UserRow(
            id=secrets.token_hex(16),
            username=username,
            password_hash=self.hasher.hash(password),
            role=role,
            tenant_id=tenant_id,
            disabled=False,
            failed_logins=0,
            locked_until_s=0.0,
            created_at=datetime.now(UTC),
        )
        try:
            with self._session(write=True) as session:
                session.add(row)
        except IntegrityError:
            raise UserError("username", f"{username!r} is taken") from None
        return self._info(row)

    def _info(self, row: UserRow) -> UserInfo:
        return UserInfo(
            id=row.id,
            username=row.username,
            role=row.role,  # type: ignore[arg-type]
            tenant_id=row.tenant_id,
            disabled=row.disabled,
            locked=row.locked_until_s > self.now(),
            created_at=_iso(row.created_at) or "",
        )

    def users(self) -> list[UserInfo]:
        with self._session() as session:
            return [
                self._info(r) for r in session.scalars(select(UserRow).order_by(UserRow.username))
            ]

    def user(self, user_id: str) -> UserInfo | None:
        with self._session() as session:
            row = session.get(UserRow, user_id)
            return self._info(row) if row else None

    def user_by_name(self, username: str) -> UserInfo | None:
        with self._session() as session:
            row = session.scalars(select(UserRow).where(UserRow.username == username)).first()
            return self._info(row) if row else None

    def update_user(
        self, user_id: str, *, password: str | None = None, disabled: bool | None = None
    ) -> UserInfo | None:
        """Sets a new password (which unlocks the account and ends its sessions) or
        disables/enables the user (disabling ends its sessions too)."""
        if password is not None:
            problem = password_errors(password)
            if problem:
                raise UserError("password", problem)
        with self._session(write=True) as session:
            row = session.get(UserRow, user_id)
            if row is None:
                return None
            if password is not None:
                row.password_hash = self.hasher.hash(password)
                row.failed_logins = 0
                row.locked_until_s = 0.0
            if disabled is not None:
                row.disabled = disabled
            if password is not None or disabled:
                session.execute(delete(SessionRow).where(SessionRow.user_id == user_id))
            return self._info(row)

    def delete_user(self, user_id: str) -> bool:
        with self._session(write=True) as session:
            return bool(session.execute(delete(UserRow).where(UserRow.id == user_id)).rowcount)

    def count(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)

    # --- logins
    def authenticate(self, username: str, password: str, address: str = "") -> Principal:
        """The user whose name and password these are; `LoginRefused` otherwise. Every
        failure counts against the account and the address."""
        now_s = self.now()
        wait_s = self.addresses.retry_after_s(address, now_s)
        if wait_s > 0:
            raise LoginRefused("throttled", wait_s)
        with self._session() as session:
            row = session.scalars(select(UserRow).where(UserRow.username == username)).first()
        if row is None or row.disabled:
            self._verify(self._dummy_hash, password)
            self.addresses.fail(address, now_s)
            raise LoginRefused("credentials")
        if row.locked_until_s > now_s:
            self.addresses.fail(address, now_s)
            raise LoginRefused("locked", row.locked_until_s - now_s)
        if not self._verify(row.password_hash, password):
            self.addresses.fail(address, now_s)
            with self._session(write=True) as session:
                session.execute(
                    update(UserRow)
                    .where(UserRow.id == row.id)
                    .values(failed_logins=UserRow.failed_logins + 1)
                )
                failures = session.scalar(select(UserRow.failed_logins).where(UserRow.id == row.id))
                until = account_locked_until(
                    int(failures or 0), self.max_failures, now_s, self.lockout_s
                )
                if until:
                    session.execute(
                        update(UserRow)
                        .where(UserRow.id == row.id)
                        .values(locked_until_s=until, failed_logins=0)
                    )
            if until:
                raise LoginRefused("locked", self.lockout_s)
            raise LoginRefused("credentials")
        with self._session(write=True) as session:
            values: dict[str, object] = {"failed_logins": 0, "locked_until_s": 0.0}
            if self.hasher.check_needs_rehash(row.password_hash):
                values["password_hash"] = self.hasher.hash(password)
            session.execute(update(UserRow).where(UserRow.id == row.id).values(**values))
        return Principal(row.id, row.username, row.role, row.tenant_id)  # type: ignore[arg-type]

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self.hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    # --- API tokens
    def create_token(self, user_id: str, name: str = "") -> tuple[TokenInfo, str]:
        """A new API token for the user: its record, and the secret (shown once; only its
        SHA-256 is stored)."""
        secret = "obc_" + new_secret()
        row = TokenRow(
            id=secrets.token_hex(8),
            user_id=user_id,
            name=name,
            token_sha256=sha256_hex(secret),
            created_at=datetime.now(UTC),
        )
        try:
            with self._session(write=True) as session:
                session.add(row)
        except IntegrityError as exc:
            raise StoreError(f"token refused: {exc.orig}") from exc
        return TokenInfo(row.id, row.name, _iso(row.created_at) or ""), secret

    def tokens(self, user_id: str) -> list[TokenInfo]:
        with self._session() as session:
            rows = session.scalars(
                select(TokenRow).where(TokenRow.user_id == user_id).order_by(TokenRow.created_at)
            )
            return [TokenInfo(r.id, r.name, _iso(r.created_at) or "") for r in rows]

    def revoke_token(self, user_id: str, token_id: str) -> bool:
        with self._session(write=True) as session:
            deleted = session.execute(
                delete(TokenRow).where(TokenRow.id == token_id, TokenRow.user_id == user_id)
            ).rowcount
            return bool(deleted)

    def principal_for_token(self, secret: str) -> Principal | None:
        with self._session() as session:
            found = session.execute(
                select(UserRow, TokenRow.id)
                .join(TokenRow, TokenRow.user_id == UserRow.id)
                .where(TokenRow.token_sha256 == sha256_hex(secret))
            ).first()
        if found is None or found[0].disabled:
            return None
        row = found[0]
        return Principal(row.id, row.username, row.role, row.tenant_id)  # type: ignore[arg-type]

    # --- web sessions
    def create_session(self, user_id: str) -> tuple[str, str]:
        """A new session: (its secret for the cookie, its CSRF token)."""
        secret, csrf = new_secret(), new_secret()
        now_s = self.now()
        with self._session(write=True) as session:
            session.execute(delete(SessionRow).where(SessionRow.expires_s <= now_s))
            session.add(
                SessionRow(
                    id_sha256=sha256_hex(secret),
                    user_id=user_id,
                    csrf_token=csrf,
                    expires_s=now_s + self.session_ttl_s,
                )
            )
        return secret, csrf

    def session(self, secret: str) -> tuple[Principal, str] | None:
        """The principal and CSRF token of a live session, None for an unknown or expired one."""
        with self._session() as session:
            found = session.execute(
                select(UserRow, SessionRow.csrf_token, SessionRow.expires_s)
                .join(SessionRow, SessionRow.user_id == UserRow.id)
                .where(SessionRow.id_sha256 == sha256_hex(secret))
            ).first()
        if found is None:
            return None
        row, csrf, expires_s = found
        if expires_s <= self.now() or row.disabled:
            return None
        return Principal(row.id, row.username, row.role, row.tenant_id), csrf  # type: ignore[arg-type]

    def end_session(self, secret: str) -> None:
        with self._session(write=True) as session:
            session.execute(delete(SessionRow).where(SessionRow.id_sha256 == sha256_hex(secret)))
