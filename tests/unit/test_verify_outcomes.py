"""The pure parts of `zsnap verify`: which sets, how an outcome is judged, recorded and told."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from zsnap.catalog import NONE, SnapshotSet
from zsnap.clone.naming import check_name
from zsnap.errors import NotFoundError, UsageError
from zsnap.pg.connection import instance_conninfo
from zsnap.verify import (
    Check,
    Outcome,
    Selection,
    Verification,
    amcheck_check,
    checksums_check,
    failure_line,
    instance_name,
    sql_check,
)

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


def make_set(minute: int, *, complete: bool = True, verified: bool = False) -> SnapshotSet:
    at = T0 + timedelta(minutes=minute)
    return SnapshotSet(
        id=at.strftime("%Y%m%dT%H%M%SZ"), cluster="c", created=at, timeline=1,
        redo_lsn="0/1000000", checkpoint_lsn="0/1000060", consistent_lsn="0/1000100",
        replay_lsn="0/1000100", replay_timestamp=at, system_identifier=1,
        server_version=150000, wal_segment_size=16 << 20, block_size=8192, data_checksums=True,
        datasets=["p/a"], layout="[]", complete=complete,
        missing=[] if complete else ["p/a@zsnap_x"],
        verified_at=at + timedelta(hours=1) if verified else None,
        verify_outcome="passed" if verified else None,
    )


SETS = [make_set(0, verified=True), make_set(10), make_set(20), make_set(30, complete=False)]


def ids(sets: list[SnapshotSet]) -> list[str]:
    return [s.id for s in sets]


def test_default_is_the_newest_complete_set() -> None:
    assert ids(Selection().choose(SETS)) == [SETS[2].id]


def test_unverified_is_every_complete_set_never_verified_oldest_first() -> None:
    assert ids(Selection(unverified=True).choose(SETS)) == [SETS[1].id, SETS[2].id]
    assert Selection(unverified=True).choose(SETS[:1]) == []


def test_an_id_selects_that_set_even_when_verified() -> None:
    assert ids(Selection(set_id=SETS[0].id).choose(SETS)) == [SETS[0].id]


def test_bad_selections_are_refused() -> None:
    with pytest.raises(NotFoundError, match="no snapshot set 20990101T000000Z"):
        Selection(set_id="20990101T000000Z").choose(SETS)
    with pytest.raises(UsageError, match="incomplete"):
        Selection(set_id=SETS[3].id).choose(SETS)
    with pytest.raises(NotFoundError, match="no complete snapshot set"):
        Selection().choose(SETS[3:])
    with pytest.raises(UsageError, match="not several"):
        Selection(set_id=SETS[0].id, unverified=True).choose(SETS)


def verification(*outcomes: tuple[str, Outcome]) -> Verification:
    v = Verification("20261121T120000Z", instance_name("c", "20261121T120000Z"), T0,
                     [Check(name, outcome, f"{name} said so") for name, outcome in outcomes],
                     finished=T0 + timedelta(seconds=9), rto_s=3.25, wal_replayed_bytes=4096)
    return v


def test_a_passed_verification_clears_the_failed_check() -> None:
    v = verification(("recovery", Outcome.PASSED), ("checksums", Outcome.SKIPPED))
    assert v.outcome is Outcome.PASSED and v.failed_check is None
    assert v.properties() == {
        "zsnap:verification": f"2026-11-21T12:00:09+00:00|passed|{NONE}|3.250"}
    assert failure_line([v]) is None
    assert v.summary() == ("set 20261121T120000Z passed verification: RTO 3.2 s, "
                           "4096 bytes of WAL replayed")


def test_the_first_failed_check_is_named() -> None:
    v = verification(("recovery", Outcome.PASSED), ("amcheck", Outcome.FAILED),
                     ("sql[0]", Outcome.PASSED), ("checksums", Outcome.FAILED))
    assert v.outcome is Outcome.FAILED and v.failed_check == "amcheck"
    assert v.properties()["zsnap:verification"].split("|")[1:3] == ["failed", "amcheck"]
    assert failure_line([v]) == ("set 20261121T120000Z failed verification: amcheck "
                                 "(amcheck said so)")
    data = v.to_json()
    assert data["failed_check"] == "amcheck"
    assert [c["outcome"] for c in data["checks"]] == ["passed", "failed", "passed", "failed"]


def test_a_set_that_did_not_recover_has_no_rto() -> None:
    v = Verification("20261121T120000Z", "verify-x", T0,
                     [Check("recovery", Outcome.FAILED, "WAL segment X is missing")])
    assert v.properties()["zsnap:verification"] == \
        f"2026-11-21T12:00:00+00:00|failed|recovery|{NONE}"


def test_several_failed_sets_make_one_line() -> None:
    good = verification(("recovery", Outcome.PASSED))
    bad = verification(("recovery", Outcome.FAILED))
    line = failure_line([good, bad, bad])
    assert line is not None and "\n" not in line
    assert line.startswith("2 of 3 sets failed verification: 20261121T120000Z (recovery)")


@given(st.one_of(st.none(), st.integers(), st.text(), st.just(False), st.just(1)))
def test_only_true_passes_a_user_check(value: object) -> None:
    assert sql_check("sql[0]", value).outcome is Outcome.FAILED
    assert sql_check("sql[0]", True).outcome is Outcome.PASSED


def test_pg_checksums_output_is_read() -> None:
    ok = checksums_check(0, "Checksum operation completed\nFiles scanned:   960\n"
                            "Blocks scanned:  2839\nBad checksums:  0\n", "")
    assert ok == Check("checksums", Outcome.PASSED, "2839 blocks scanned")
    bad = checksums_check(
        1, "Blocks scanned:  2839\nBad checksums:  1\n",
        'pg_checksums: error: checksum verification failed in file "/x/base/5/16415", block 1: '
        "calculated checksum 40F8 but block contains 972F\n")
    assert bad.outcome is Outcome.FAILED
    assert bad.detail.startswith('1 bad checksum(s); first: checksum verification failed in file '
                                 '"/x/base/5/16415", block 1')
    unclean = checksums_check(1, "", "pg_checksums: error: cluster must be shut down\n")
    assert unclean == Check("checksums", Outcome.FAILED, "cluster must be shut down")


def test_instance_names_hold_the_cluster_and_fit_a_clone_name() -> None:
    assert instance_name("main", "20261121T120000Z") == "verify-main-20261121T120000Z"
    long = instance_name("x" * 64, "20261121T120000Z")
    assert long == f"verify-{'x' * 24}-20261121T120000Z"
    assert check_name(long) == long


def test_the_instance_is_reached_with_the_standbys_credentials_on_its_socket() -> None:
    got = conninfo_to_dict(instance_conninfo(
        "host=db.example port=5432 user=zsnap password=s3cret dbname=app sslmode=prefer",
        "/clones/verify-x/run", 55432, "template1"))
    assert got == {"host": "/clones/verify-x/run", "port": "55432", "user": "zsnap",
                   "password": "s3cret", "dbname": "template1", "sslmode": "prefer"}


def test_the_public_dsn_of_an_instance_names_no_password() -> None:
    got = conninfo_to_dict(instance_conninfo(
        "host=db.example port=5432 user=zsnap password=s3cret dbname=app sslmode=prefer",
        "/clones/c/run", 55433, public=True))
    assert got == {"host": "/clones/c/run", "port": "55433", "user": "zsnap", "dbname": "app"}


def test_amcheck_names_the_databases_it_was_not_allowed_in_beside_damage_elsewhere() -> None:
    grant = "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO zsnap"
    done = "3 btree indexes and 2 tables in 1 databases"
    passed = amcheck_check([], [], done, 1, grant)
    assert (passed.outcome, passed.detail) == (Outcome.PASSED, done)
    skipped = amcheck_check([], ["app"], done, 1, grant)
    assert (skipped.outcome, skipped.detail) == (
        Outcome.SKIPPED, f"not allowed in app ({done} checked): {grant}")
    nowhere = amcheck_check([], ["app", "postgres"], "0 btree indexes", 0, grant)
    assert nowhere.detail == f"not allowed in app, postgres: {grant}"
    damaged = amcheck_check(["index orders_pkey in shop: corrupt"], ["app"], done, 1, grant)
    assert (damaged.outcome, damaged.detail) == (
        Outcome.FAILED, "index orders_pkey in shop: corrupt; not allowed in app")
