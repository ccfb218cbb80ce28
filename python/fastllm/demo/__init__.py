"""`fastllm demo`: the whole pipeline on one corpus (`run`), and its report with plots (`report`)."""

from fastllm.demo.run import DemoConfig, DemoInterrupted, DemoResult, load_state, run_demo

__all__ = ["DemoConfig", "DemoInterrupted", "DemoResult", "load_state", "run_demo"]
