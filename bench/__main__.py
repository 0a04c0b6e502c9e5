"""`python -m bench` (what `make bench` runs): see bench/suite.py for the figures and the knobs."""

from bench.suite import main

main()
