"""The log keeper: one process per fsup home that holds the formations' stdout and stderr
pipes, stamps what it reads and appends it as CRI lines to each version's log file.

It outlives fsup (a crash, a SIGKILL, an upgrade) so the children keep logging, and fsup keeps
duplicates of the pipes' read ends so that the keeper can die too without a child seeing
EPIPE. Run as `python -m supervisor.runtime.keeper --home HOME` (`__main__`); the protocol
fsup speaks to it is `protocol`. Stdlib only, and nothing of fsup's but `supervisor.core.cri`:
the keeper must start fast, stay small and never share fsup's failures.
"""
