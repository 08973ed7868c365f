"""Asking the past: an instance paused at a target answers a query or a dump, then goes."""
