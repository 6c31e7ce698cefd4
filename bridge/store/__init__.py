"""Persistence: SQLModel tables and every SQL query; all SQLite/PostgreSQL differences live here."""
