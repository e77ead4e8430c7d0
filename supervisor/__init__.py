"""fsup: a local, actor-based process supervisor on trio."""

__version__ = "0.1.0"
