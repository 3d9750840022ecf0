"""Plan execution: topological order, content-addressed cache, progress, atomic writes."""
