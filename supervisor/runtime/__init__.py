"""The running server: `fsup serve` and the live state its parts share.

Two levels, checked by the import contract: below the actors, what they write into and the
edges read (event bus, routing table, port pool, the server's own log, periodic telemetry);
above the actors, what composes them (`operations`: requests as streams of progress, and
`server`: the one nursery that owns the fleet and the HTTP front end).
"""
