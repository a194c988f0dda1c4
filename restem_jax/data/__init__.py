"""Dataset preparation: fetch and lay out the benchmarks the tasks read."""
