"""Shared test helpers: a CDC corpus generator and the reference model of the relay's final table."""
