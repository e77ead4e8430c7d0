"""Actors: the actor base, supervision, and the formation and search actors."""
