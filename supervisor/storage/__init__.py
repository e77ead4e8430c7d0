"""Storage: what fsup keeps on disk under its home folder.

Home files and secrets, `config.yaml`, bundle unpacking and intake, version folders,
formation logs, CLI profiles, and the SQLite store (one module per aggregate, one list of
migrations). It uses the core and nothing above it.
"""
