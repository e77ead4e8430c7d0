"""The pure core: what fsup decides without trio, files, sockets or a clock of its own.

Error codes, `formation.yaml` validation, version order, request signing (both schemes),
search matching, JSON bodies read at a bounded cost, timestamps. Everything above depends on
this layer; it depends on nothing of fsup's (the import contract in `pyproject.toml` checks).
"""
