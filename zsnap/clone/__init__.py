"""Flashback instances: ZFS clones of a snapshot set recovered to a target.

The API other operations build on (verification runs, benchmarks):

    from zsnap.clone import CloneRequest, CreateClone, DestroyClone, Target
    result = CreateClone(config, zfs).run(CloneRequest(Target.immediate(), set_id=set_id))
    ... psycopg.connect(result.dsn) ...
    DestroyClone(config, zfs).run(result.name)
"""

from zsnap.clone.create import CloneRequest, CloneResult, CreateClone
from zsnap.clone.destroy import DestroyClone, DestroyResult
from zsnap.clone.instance import ReplayState
from zsnap.clone.target import Kind, Target

__all__ = [
    "CloneRequest", "CloneResult", "CreateClone", "DestroyClone", "DestroyResult", "Kind",
    "ReplayState", "Target",
]
