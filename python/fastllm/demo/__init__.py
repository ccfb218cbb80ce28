"""`fastllm demo`: the whole pipeline on one corpus (`run`), its settings and run record (`state`),
its five stages (`stages`), and its report with plots (`report`)."""

from fastllm.demo.run import DemoInterrupted, DemoResult, run_demo
from fastllm.demo.state import DemoConfig, load_state

__all__ = ["DemoConfig", "DemoInterrupted", "DemoResult", "load_state", "run_demo"]
