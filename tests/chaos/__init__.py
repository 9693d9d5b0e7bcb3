"""Fault tests (R1-R5 of the README's bar): real processes killed or cut off under load."""
