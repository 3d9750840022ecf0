"""The benchmark harness: policy grid, runs, statistics and the results page."""
