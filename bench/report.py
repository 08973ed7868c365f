"""Results (the JSON a run writes) as Markdown tables: medians, spreads and ratios."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.stats import Summary, ratio

LABELS = {
    "zsnap": "zsnap clone --at T",
    "zsnap-pause": "zsnap clone --at T --pause (paused at T, read-only)",
    "zsnap-defaults": "zsnap clone --at T --no-fast-recovery (PostgreSQL's settings)",
    "pgbackrest": "pgBackRest restore --type=time",
    "pgbackrest-zfs": "pgBackRest restore --type=time onto ZFS",
    "basebackup": "pg_basebackup (tar) extract + PITR",
}


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def seconds(summary: Summary | None) -> str:
    if summary is None:
        return "-"
    if summary.n == 1:
        return f"{summary.median:.1f} s"
    return f"{summary.median:.1f} s ({summary.low:.1f}-{summary.high:.1f})"


def times(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}x"


def gib(size: float) -> str:
    return f"{size / 1024**3:.2f} GiB"


def short_fs(text: str) -> str:
    """'zfs-fuse (pool/zsnap-clones/clone-x/0)' -> 'zfs-fuse (pool pool)': one row stands for
    runs on different clones of the same pool."""
    kind, _, rest = text.partition(" (")
    if kind.startswith("zfs"):
        return f"{kind} (pool {rest.split('/')[0].rstrip(')')})"
    return text


def by_path(outcomes: list[dict[str, Any]], scenario: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for o in outcomes:
        if o["scenario"] == scenario:
            groups.setdefault(o["path"], []).append(o)
    return groups


def summary_of(entries: list[dict[str, Any]], key: str) -> Summary | None:
    values = [float(e[key]) for e in entries if e.get(key) is not None]
    return Summary.of(values) if values else None


def restore_table(outcomes: list[dict[str, Any]], scenario: str) -> str:
    """One row per path: ready time (median, spread), its parts, and the ratio to zsnap."""
    groups = by_path(outcomes, scenario)
    base = summary_of(groups.get("zsnap", []), "total_s")
    rows = []
    for path, entries in groups.items():
        total = summary_of(entries, "total_s")
        assert total is not None
        rows.append([
            LABELS.get(path, path), short_fs(entries[0]["filesystem"]), total.n, seconds(total),
            seconds(summary_of(entries, "copy_s")), seconds(summary_of(entries, "recover_s")),
            times(ratio(total.median, base.median)) if base else "-",
            ", ".join(sorted({str(e["history_rows"]) for e in entries})),
        ])
    return table(
        ["path", "filesystem", "runs", "ready after (median, min-max)", "copy", "start to ready",
         "x zsnap", "pgbench_history rows"],
        rows,
    )


def schedule_table(outcomes: list[dict[str, Any]], scenario: str = "b") -> str:
    groups = by_path(outcomes, scenario)
    rows = []
    for entries in zip(*groups.values(), strict=False):
        first = entries[0]  # runs before hourly sets placed their targets in days
        row: list[object] = [f"hour {first['hour']:.1f}" if "hour" in first
                             else f"day {first['day']:.2f}"]
        for e in entries:
            detail = e.get("detail") or {}
            chosen = f" (set {detail['set']})" if detail.get("set") else ""
            row.append(f"{e['total_s']:.1f} s{chosen}")
        rows.append(row)
    medians: list[object] = ["**median**"]
    for entries in groups.values():
        total = summary_of(entries, "total_s")
        medians.append(f"**{total.median:.1f} s**" if total else "-")
    rows.append(medians)
    return table(["target", *(LABELS.get(p, p) for p in groups)], rows)


def ratio_to_zsnap(outcomes: list[dict[str, Any]], scenario: str, other: str) -> float | None:
    """How many times longer `other` took than zsnap (medians): above 1, zsnap is faster."""
    groups = by_path(outcomes, scenario)
    mine, theirs = summary_of(groups.get("zsnap", []), "total_s"), summary_of(
        groups.get(other, []), "total_s")
    return ratio(theirs.median, mine.median) if mine and theirs else None


def profile_table(outcomes: list[dict[str, Any]]) -> str:
    """Where a zsnap clone's time goes (medians per scenario), from each clone's own JSON:
    its steps, PostgreSQL's start and replay from the server log (the floor), what zsnap adds
    above that floor (the CLI's start included), and the durability after it returned."""
    rows = []
    for scenario in ("a", "b", "c", "b2"):
        for path in ("zsnap", "zsnap-pause"):
            entries = by_path(outcomes, scenario).get(path, [])
            if not entries:
                continue
            clones = [e["detail"]["clone"] for e in entries]

            def med(values: list[float | None]) -> float | None:
                present = [v for v in values if v is not None]
                return Summary.of(present).median if present else None

            total = med([e["total_s"] for e in entries])
            limit = med([c.get("limit_s") for c in clones])
            rows.append([
                scenario, LABELS.get(path, path), len(entries), total,
                med([c["steps_s"].get("clone") for c in clones]),
                med([c["steps_s"].get("consistent") for c in clones]),
                med([c["steps_s"].get("target") for c in clones]),
                med([c["steps_s"].get("promote") for c in clones]),
                med([(c.get("wal_replayed_bytes") or 0) / 2**20 for c in clones]),
                med([c.get("replay_mb_s") for c in clones]), limit,
                med([e["total_s"] - c["limit_s"] for e, c in zip(entries, clones, strict=True)
                     if c.get("limit_s") is not None]),
                med([e["detail"].get("durable_after_s") for e in entries]),
            ])
    return table(["scenario", "path", "runs", "ready (s)", "clone", "to consistent",
                  "to target", "promote", "WAL replayed (MiB)", "replay MB/s",
                  "floor: PostgreSQL start + replay (s)", "zsnap above the floor (s)",
                  "durable after return (s)"], rows)


@dataclass(frozen=True)
class Goal:
    """One goal against what a run measured; `met` None when the run did not measure it."""

    name: str
    wanted: str
    measured: str
    met: bool | None

    def row(self) -> list[str]:
        verdict = "not measured" if self.met is None else "met" if self.met else "**missed**"
        return [self.name, self.wanted, self.measured, verdict]


def goals_of(rows: Iterable[Goal]) -> str:
    return table(["goal", "wanted", "measured", ""], (g.row() for g in rows))


def at_least(value: float | None, wanted: float) -> bool | None:
    return None if value is None else value >= wanted


def at_most(value: float | None, wanted: float) -> bool | None:
    return None if value is None else value <= wanted


def run_goals(outcomes: list[dict[str, Any]]) -> list[Goal]:
    """The goals of issue 9 against what `bench run` measured."""
    a = ratio_to_zsnap(outcomes, "a", "pgbackrest")
    b, b2 = ratio_to_zsnap(outcomes, "b", "pgbackrest"), ratio_to_zsnap(outcomes, "b2",
                                                                           "pgbackrest")
    small = summary_of(by_path(outcomes, "a").get("zsnap", []), "total_s")
    big = summary_of(by_path(outcomes, "c").get("zsnap", []), "total_s")
    growth = ratio(big.median, small.median) if small and big else None
    over = [e["total_s"] - e["detail"]["clone"]["limit_s"] for e in outcomes
            if e["path"] == "zsnap" and e["scenario"] in ("a", "b")
            and e["detail"]["clone"].get("limit_s") is not None]
    overhead = Summary.of(over).median if over else None
    return [
        Goal("a. same start: pgBackRest / zsnap", ">= 1.0x", times(a), at_least(a, 1.0)),
        Goal("b. hourly sets vs daily full backup: pgBackRest / zsnap (size S)", ">= 5x",
             times(b), at_least(b, 5.0)),
        Goal("b. the same at size 2S", "growing with size", times(b2),
             None if b is None or b2 is None else b2 > b),
        Goal("c. zsnap's ready time at 2S / S", "<= 1.15", times(growth),
             at_most(growth, 1.15)),
        Goal("zsnap above the floor (median, a and b)", "<= 1 s",
             "-" if overhead is None else f"{overhead:.2f} s", at_most(overhead, 1.0)),
    ]


def goals_table(outcomes: list[dict[str, Any]]) -> str:
    return goals_of(run_goals(outcomes))


def doubling_table(outcomes: list[dict[str, Any]]) -> str:
    a, c = by_path(outcomes, "a"), by_path(outcomes, "c")
    rows = []
    for path, entries in c.items():
        small = summary_of(a.get(path, []), "total_s")
        big = summary_of(entries, "total_s")
        assert big is not None
        rows.append([
            LABELS.get(path, path), short_fs(entries[0]["filesystem"]),
            gib(a[path][0]["size_bytes"]) if path in a else "-", seconds(small),
            gib(entries[0]["size_bytes"]), seconds(big),
            times(ratio(big.median, small.median)) if small else "-",
        ])
    return table(["path", "filesystem", "size S", "ready (S)", "size 2S", "ready (2S)",
                  "2S / S"], rows)


def snapshot_cost_table(cost: dict[str, Any]) -> str:
    base, during = cost["baseline"], cost.get("during_max_lag_bytes")
    pause = cost["pause_ms"]
    rows = [
        ["replay paused per set (pause_ms)",
         f"median {pause['median']:.0f} ms ({pause['low']:.0f}-{pause['high']:.0f})"],
        ["lag without a set: median / p95 / max",
         f"{_kib(base['bytes_p50'])} / {_kib(base['bytes_p95'])} / {_kib(base['bytes_max'])}"],
        ["lag around a set (max within it and 2 s after): median / max over sets",
         f"{_kib(during['median'])} / {_kib(during['high'])}" if during else "-"],
        ["replay_lag without a set: median / max",
         f"{_s(base['replay_lag_s_p50'])} / {_s(base['replay_lag_s_max'])}"],
        ["replay_lag around each set (max)",
         ", ".join(_s(p["max_replay_lag_s"]) for p in cost["per_set"])],
        ["the whole `zsnap snapshot` (CLI, primary CHECKPOINT if on, pause): median",
         _s(Summary.of([float(p["command_s"]) for p in cost["per_set"]]).median)],
    ]
    return table(["under pgbench -R " + str(cost["rate_tps"]), "value"], rows)


def _kib(value: float | None) -> str:
    return "-" if value is None else f"{value / 1024:.0f} KiB"


def _s(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def scale_table(scale: dict[str, Any]) -> str:
    rows = []
    for when, label in (("before", "real sets only"), ("after", f"+{scale['sets']} sets")):
        for command, data in scale[when].items():
            s = data["seconds"]
            name = "clone --at T --dry-run (set selection)" if command == "select" else command
            rows.append([f"zsnap {name}", label, data["rows"],
                         f"{s['median']:.2f} s ({s['low']:.2f}-{s['high']:.2f})",
                         data["zfs_calls"]])
    return table(["command", "catalog", "sets listed", "time (median, min-max)", "zfs calls"],
                 rows)


def render(results: dict[str, Any]) -> str:
    """The measured part of docs/benchmarks.md."""
    m = results.get("machine", {})
    out = [
        "```",
        f"{results['command']}",
        "```",
        "",
        table(["", ""], [
            ["date", m.get("date")], ["cpus", m.get("nproc")],
            ["memory", f"{m.get('memory_gib')} GiB"], ["kernel", m.get("kernel")],
            ["os", m.get("os")], ["PostgreSQL", m.get("postgresql")],
            ["pgBackRest", m.get("pgbackrest")], ["ZFS", m.get("zfs")],
            ["load average at start / end", f"{m.get('load_average_start')} / "
                                            f"{m.get('load_average_end')}"],
            *([f"filesystem: {k}", v] for k, v in results.get("filesystems", {}).items()),
        ]),
    ]
    outcomes = results.get("outcomes", [])
    window = results.get("window")
    if "load" in results:
        load = results["load"]
        out += ["", f"Database: pgbench scale {load['scale']}, {gib(load['size_bytes'])} "
                    f"(pgbench -i {load['init_s']} s; standby caught up "
                    f"{load['standby_caught_up_s']} s later)."]
    if window:
        out += ["", f"Writes after the common start: {gib(window['wal_bytes'])} of WAL, "
                    f"{window['transactions']} pgbench transactions in {window['seconds']:.0f} s; "
                    f"target T = {window['target']}."]
        held = window.get("held_by_sets")
        if held:
            total = sum(v["bytes"] for v in held.values())
            sizes = sorted({v["recordsize"] // 1024 for v in held.values()})
            out += ["", f"The {len(window['sets']) + 1} sets of the window then held "
                        f"{gib(total)} of copy-on-write space (ZFS `usedbysnapshots`, recordsize "
                        f"{', '.join(f'{k} KiB' for k in sizes)})."]
    if any(o["scenario"] == "a" for o in outcomes):
        out += ["", "### a. Same start, same target", "", restore_table(outcomes, "a")]
    if any(o["scenario"] == "b" for o in outcomes):
        out += ["", "### b. A day: hourly sets against a daily full backup, random targets", "",
                schedule_table(outcomes)]
    if any(o["scenario"] == "c" for o in outcomes):
        out += ["", "### c. Database size doubled", "", doubling_table(outcomes)]
    if any(o["scenario"] == "b2" for o in outcomes):
        out += ["", "### b at size 2S", "", schedule_table(outcomes, "b2")]
    if any(o["path"] == "zsnap" for o in outcomes):
        out += ["", "### Where zsnap's time goes", "", profile_table(outcomes),
                "", "### Against the goals", "", goals_table(outcomes)]
    if "snapshot_cost" in results:
        out += ["", "### Snapshot cost", "", snapshot_cost_table(results["snapshot_cost"])]
    if "scale" in results:
        sc = results["scale"]
        out += ["", "### Catalog at scale", "",
                f"{sc['sets']} sets of {sc['datasets_per_set']} datasets made in "
                f"{sc['create_s']} s (one `zfs snapshot` per snapshot), removed in "
                f"{sc['remove_s']} s; {sc['snapshots_on_host']} snapshots on the host "
                "while measuring.", "", scale_table(sc)]
    return "\n".join(out) + "\n"
