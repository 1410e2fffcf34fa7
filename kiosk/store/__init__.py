"""SQLite storage: schema, migrations, repositories, audit outbox (the only SQL)."""
