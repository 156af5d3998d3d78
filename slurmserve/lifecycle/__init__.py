"""What `run` does, one module per phase."""
