"""Bring a journal written by an older pinkrelay up to the current schema, in place.

A control room upgrades without losing its history: each step only adds
columns with defaults, so rows already recorded keep their meaning (an alert
closed before outcomes existed has outcome ``""``: unknown, not false).
"""

from __future__ import annotations

import sqlite3

#: Columns added after schema version 1: (table, column, declaration).
ADDED_COLUMNS = (
    ("events", "outcome", "TEXT NOT NULL DEFAULT ''"),
    ("events", "category", "TEXT NOT NULL DEFAULT ''"),
)

CURRENT_VERSION = 2


def migrate(conn: sqlite3.Connection) -> None:
    """Add every missing column and record the schema version (idempotent)."""
    for table, column, declaration in ADDED_COLUMNS:
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in present:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
    conn.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(CURRENT_VERSION),),
    )
