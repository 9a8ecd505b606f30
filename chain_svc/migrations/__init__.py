"""Alembic revisions of the `chain` schema (run by `meshctl migrate`)."""
