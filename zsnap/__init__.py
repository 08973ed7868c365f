"""zsnap: consistent ZFS snapshot sets of a PostgreSQL standby, and flashback instances."""

__version__ = "0.1.0"
