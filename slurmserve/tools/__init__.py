"""Tools over a running endpoint or a model: test, bench, plan."""
