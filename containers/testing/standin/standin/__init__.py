"""STAND-IN engines for slurmserve tests: not vLLM, not SGLang, not TensorRT-LLM.

They accept the real engines' command lines, form real process groups (Ray placement
groups, MPI worlds, TCP rendezvous) and serve a deterministic OpenAI-compatible API.
"""

__version__ = "0.1.0"
