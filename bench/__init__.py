"""Benchmarks of zsnap against pgBackRest and pg_basebackup: time to a ready flashback instance,
the cost of taking a snapshot set, and the catalog at scale. Run with `python -m bench run`."""
