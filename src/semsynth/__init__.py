"""semsynth: semantic image synthesis (OASIS and the systems it is compared with)."""

__version__ = "0.1.0"
