"""The store: the data model and the database it lives in.

``models`` holds the tables (SQLite and PostgreSQL alike), ``states`` the named states every
status column takes (StrEnums, stored as the strings they always were), ``db`` the engines,
sessions and the schema check, ``dbapi`` a bare DB-API connection for a quick read (no
SQLAlchemy: `sends status`), and ``migrations/`` the Alembic history. It knows nothing of
lists, sends or mail as behaviour: those are the domain's. It may import only the foundation
(newsletter.errors, newsletter.config, newsletter.logs, newsletter.resources); everything
above it (subscribers, access, content, mail, delivery, feedback and the edges) may import it.
"""
