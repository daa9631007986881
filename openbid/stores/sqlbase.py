"""The declarative base every catalog table derives from (one metadata for Alembic), and
what a database that cannot answer raises."""

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import DeclarativeBase

# What a database that is down, restarting, unreachable, out of connections or missing its
# schema raises: every DBAPI error (OperationalError, ProgrammingError for a missing table on
# PostgreSQL, InterfaceError for a closed connection ...) and the pool's checkout timeout.
UNAVAILABLE = (DBAPIError, PoolTimeoutError)


class Base(DeclarativeBase):
    pass
