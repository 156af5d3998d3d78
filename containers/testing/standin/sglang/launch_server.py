"""`python -m sglang.launch_server` -- STAND-IN for tests, not SGLang."""

from standin.sglang_cli import main

if __name__ == "__main__":
    main()
