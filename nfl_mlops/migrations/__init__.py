"""Alembic migrations of the state DB (`versions/`), applied by `db.get_engine` when a process first
connects; see `nfl_mlops.db.migrate`."""
