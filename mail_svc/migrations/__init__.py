"""Alembic revisions of the `mail` schema (run by `meshctl migrate`)."""
