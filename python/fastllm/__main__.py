"""`python -m fastllm` runs the command line."""

from fastllm.cli import main

main()
