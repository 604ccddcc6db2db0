"""Importers of official checkpoints (``semsynth import-official``): :mod:`.oasis`."""
