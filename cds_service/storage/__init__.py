"""storage: feedback, served-card records and the JWT replay table in SQLite or PostgreSQL.

``CDS_DATABASE_URL`` chooses the backend; :class:`~.database.Database` is the one data-access
layer (SQLAlchemy Core, Alembic migrations) both backends share.
"""
