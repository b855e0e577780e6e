"""Benchmarks: programs that print a table and write JSON to bench/results/.

Each compares its contenders side by side in one run, so ratios hold on noisy machines.
"""
