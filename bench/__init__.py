"""The storage benchmark behind `make bench`: append cost, memory per message, round trips."""
