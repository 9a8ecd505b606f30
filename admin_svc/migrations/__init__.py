"""Alembic revisions of the `admin` schema (run by `meshctl migrate`)."""
