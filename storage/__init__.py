"""Everything that persists: the asyncpg pool, migrations, one module of queries per table, the closed sets of
values those tables hold (``enums``), the object store, URL signing.

Database and S3 exceptions are wrapped here (``storage/errors.py``) and never leave unwrapped.
"""
