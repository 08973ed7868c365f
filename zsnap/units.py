"""Sizes in bytes, named as PostgreSQL names them (SHOW prints kB, MB, GB)."""

KB = 1024
MB = 1024 * KB
GB = 1024 * MB
