"""`make bench`: the performance comparisons (``python -m bench [--quick]``).

Each section measures ours next to a baseline in the same run and prints medians and
ratios; the figures, the machine and the date go to BENCHMARKS.md.
"""
