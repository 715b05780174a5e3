"""The run record's schema."""

SCHEMA_VERSION = 3
