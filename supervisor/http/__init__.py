"""The HTTP front end (Quart-Trio served by Hypercorn)."""
