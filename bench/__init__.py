"""The benchmarks behind `make bench`: P1 to P7 of QUALITY.md in one table (load: wrk)."""
