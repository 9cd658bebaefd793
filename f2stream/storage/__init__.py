"""PostgreSQL.

- :mod:`f2stream.storage.db`: connections and the one transient-or-permanent rule;
- :mod:`f2stream.storage.timeseries`: the measurements writer;
- :mod:`f2stream.storage.migrate`: the migrations of both databases.
"""
