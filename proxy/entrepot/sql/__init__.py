"""The SQL layer: one async engine (SQLite embedded, PostgreSQL for replicas) and migrations."""
