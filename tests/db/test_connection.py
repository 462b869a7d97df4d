"""The DSN a connection opens: the password given apart is added, once, never shown."""

from __future__ import annotations

import psycopg2
import pytest
from psycopg2.extensions import parse_dsn

from worker.db.connection import Database, with_password

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("dsn", "expected"), [
    # A URL stays a URL, the password percent-encoded (libpq decodes it).
    ("postgresql://agg@db:5432/agg?sslmode=disable",
     {"user": "agg", "host": "db", "port": "5432", "dbname": "agg", "sslmode": "disable"}),
    # libpq keywords get a quoted password=.
    ("host=db user=agg dbname=agg", {"user": "agg", "host": "db", "dbname": "agg"}),
    # A URL without a user (libpq's default user) cannot carry a password: keywords.
    ("postgresql://db/agg", {"host": "db", "dbname": "agg"}),
])
def test_with_password_adds_it_in_the_dsns_own_form(dsn: str, expected: dict[str, str]) -> None:
    password = "p@ss w'rd/:%1"
    combined = with_password(dsn, password)
    assert parse_dsn(combined) == {**expected, "password": password}
    assert combined.startswith("postgresql://") == ("@" in dsn)


def test_with_password_refuses_a_dsn_that_has_one() -> None:
    with pytest.raises(ValueError, match="keep one") as caught:
        with_password("postgresql://agg:first-pw@db/agg", "second-pw")
    assert "first-pw" not in str(caught.value) and "second-pw" not in str(caught.value)


def test_database_repr_masks_the_added_password() -> None:
    database = Database(with_password("postgresql://agg@db/agg", "s3cret-pw"))
    assert "s3cret-pw" not in repr(database)
    assert psycopg2.extensions.parse_dsn(database.dsn)["password"] == "s3cret-pw"
