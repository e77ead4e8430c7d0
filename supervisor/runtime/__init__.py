"""The live state below the actors: what they write into and the edges read.

The event bus (`events`), the routing table (`routing`), the port pool (`ports`), the server's
own log (`logs`) and the periodic fleet statistics (`telemetry`). Nothing here imports an actor,
an operation or the HTTP edge (the layers contract in pyproject.toml checks it); what composes
the actors lives above them: `supervisor.operations` and `supervisor.server`.
"""
