"""The benchmarks behind `make bench`: P1 to P8 and P10 of the README, in one table (load: wrk)."""
