"""What changed in the archived WAL, by transaction and table: `zsnap wal find` (DOMAIN.md 4b).

- `waldump`: pg_waldump's text, one segment's records summed up (pure);
- `transactions`: those summaries, segment after segment, into committed transactions;
- `relations`: which table a relation file was, read where the table existed;
- `scan`: which segments to read, reading them, and what was found in each kept;
- `find`: the operation, with its filters."""
