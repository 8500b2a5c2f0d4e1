"""The only package that speaks SQL: tables, engine, migrations, stores and the unit of work."""
