"""Alembic migrations for the service database (run by ``Database.upgrade``)."""
