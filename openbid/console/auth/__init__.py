"""Who calls the console: users with a role and a tenant, their passwords (argon2), API
tokens and web sessions (stored hashed), login throttling, and CSRF for form posts."""

from openbid.console.auth.users import (
    ROLES,
    LoginRefused,
    Principal,
    TokenInfo,
    UserInfo,
    UserStore,
)

__all__ = ["ROLES", "LoginRefused", "Principal", "TokenInfo", "UserInfo", "UserStore"]
