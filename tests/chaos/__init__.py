"""Fault tests (QUALITY.md R1-R3): real processes killed or cut off under load."""
