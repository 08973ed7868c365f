"""PostgreSQL: connections, binaries, layout, replay control."""
