"""Which table a relation file was. The WAL names files (SPC/DB/RELFILENODE), and a table's file
changes with TRUNCATE, VACUUM FULL, CLUSTER and rewrites; a dropped table has no catalog row
left. So files are named where the table existed: in the standby's catalogs now, else in a
snapshot set from before (read in a throwaway instance of the set, once: a set never changes,
so what it says is kept in the state directory)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from zsnap.errors import PostgresError, first_line
from zsnap.files import write_durably
from zsnap.pg.connection import connected

# Below this OID everything was made by initdb: the system catalogs (transam.h).
FIRST_NORMAL_OID = 16384
SYSTEM_SCHEMAS = frozenset({"pg_catalog", "information_schema", "pg_toast"})

DATABASES_SQL = """
SELECT oid, datname, dattablespace, datallowconn FROM pg_database ORDER BY oid
"""
# Every relation with storage: tables and materialized views, and (so that their files are
# known, and left out of what is listed) TOAST tables, indexes, catalogs.
RELATIONS_SQL = """
SELECT c.oid, n.nspname, c.relname, c.relkind,
       CASE WHEN c.reltablespace = 0 THEN %s ELSE c.reltablespace END,
       pg_relation_filenode(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 't', 'i') AND NOT c.relisshared
"""


@dataclass(frozen=True)
class Relation:
    database: str
    schema: str
    name: str
    oid: int
    kind: str  # pg_class.relkind

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def listed(self) -> bool:
        """A user's table (or materialized view), not a catalog or TOAST table."""
        return self.kind in ("r", "m") and self.schema not in SYSTEM_SCHEMAS \
            and not self.schema.startswith("pg_temp")

    def to_json(self) -> list[Any]:
        return [self.database, self.schema, self.name, self.oid, self.kind]

    @classmethod
    def from_json(cls, data: list[Any]) -> Relation:
        database, schema, name, oid, kind = data
        return cls(str(database), str(schema), str(name), int(oid), str(kind))


@dataclass
class RelationMap:
    """Relation files and OIDs to tables, as one catalog (a server at one moment) saw them."""

    source: str  # for messages: "the standby", "set 20261204T140000Z"
    files: dict[str, Relation] = field(default_factory=dict)  # SPC/DB/RELFILENODE
    oids: dict[str, Relation] = field(default_factory=dict)  # DB/OID
    databases: dict[int, str] = field(default_factory=dict)  # database OID -> name

    def add(self, spc: int, db: int, filenode: int | None, rel: Relation) -> None:
        if filenode:
            self.files[f"{spc}/{db}/{filenode}"] = rel
        self.oids[f"{db}/{rel.oid}"] = rel

    def named(self, qualified: str, database: str | None) -> list[Relation]:
        return [r for r in self.oids.values() if r.qualified == qualified
                and (database is None or r.database == database)]

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source,
                "files": {k: r.to_json() for k, r in self.files.items()},
                "oids": {k: r.to_json() for k, r in self.oids.items()},
                "databases": {str(k): v for k, v in self.databases.items()}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RelationMap:
        return cls(str(data["source"]),
                   {k: Relation.from_json(v) for k, v in data["files"].items()},
                   {k: Relation.from_json(v) for k, v in data["oids"].items()},
                   {int(k): str(v) for k, v in data["databases"].items()})


def read_server(source: str, conninfo_of: Callable[[str], str], what: str) -> RelationMap:
    """Every database's relations on one server; `conninfo_of(dbname)` reaches each."""
    found = RelationMap(source)
    try:
        with connected(conninfo_of("postgres"), what) as conn:
            databases = conn.execute(DATABASES_SQL).fetchall()
        for oid, name, tablespace, allowed in databases:
            found.databases[int(oid)] = str(name)
            if not allowed:
                continue
            with connected(conninfo_of(str(name)), f"{what} ({name})") as conn:
                for rel_oid, schema, rel, kind, spc, filenode in conn.execute(
                        RELATIONS_SQL, (int(tablespace),)):
                    found.add(int(spc), int(oid), int(filenode) if filenode else None,
                              Relation(str(name), str(schema), str(rel), int(rel_oid),
                                       str(kind)))
    except psycopg.Error as e:
        raise PostgresError(f"reading the relations of the {what}: {first_line(e)}") from None
    return found


@dataclass
class Names:
    """Relation files resolved against several catalogs, the first that knows one winning."""

    maps: list[RelationMap] = field(default_factory=list)

    def file(self, key: str) -> Relation | None:
        for m in self.maps:
            if (rel := m.files.get(key)) is not None:
                return rel
        return None

    def oid(self, db_oid: str) -> Relation | None:
        for m in self.maps:
            if (rel := m.oids.get(db_oid)) is not None:
                return rel
        return None

    def database(self, oid: int) -> str | None:
        for m in self.maps:
            if oid in m.databases:
                return m.databases[oid]
        return None

    def named(self, qualified: str, database: str | None) -> list[Relation]:
        seen: dict[tuple[str, int], Relation] = {}
        for m in self.maps:
            for rel in m.named(qualified, database):
                seen.setdefault((rel.database, rel.oid), rel)
        return list(seen.values())

    def unknown(self, keys: Iterable[str]) -> list[str]:
        """Files no catalog names, leaving out those initdb made (system catalogs)."""
        return [k for k in keys if self.file(k) is None
                and int(k.rsplit("/", 1)[1]) >= FIRST_NORMAL_OID]


def cached(path: Path) -> RelationMap | None:
    try:
        return RelationMap.from_json(json.loads(path.read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def keep(path: Path, found: RelationMap) -> None:
    write_durably(path, json.dumps(found.to_json()), mode=0o600)
