"""Agents of the pipeline app: decode (raw to decoded) and sink (decoded to the database)."""
