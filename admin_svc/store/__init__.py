"""SQL of the `admin` schema: accounts and sessions, and the audit log."""
