"""Flashback instances: ZFS clones of a snapshot set recovered to a target.

The API other operations build on (verification runs, queries of the past, benchmarks):

    from zsnap.clone.create import CreateClone
    from zsnap.clone.request import CloneRequest
    from zsnap.clone.destroy import DestroyClone
    from zsnap.clone.target import Target
    result = CreateClone(config, zfs).run(CloneRequest(Target.immediate(), set_id=set_id))
    ... psycopg.connect(result.dsn) ...
    DestroyClone(config, zfs).run(result.name)

(Nothing is imported here: `zsnap clone --help` loads none of it.)
"""
