"""STAND-IN for tests: not SGLang. Only `python -m sglang.launch_server` exists."""
