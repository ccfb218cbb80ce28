"""fastllm: small language models end to end, with the hot paths in Rust.

>>> from fastllm import BPETokenizer
>>> tok = BPETokenizer.train(["hello world"] * 8, 260, show_progress=False)
>>> tok.decode(tok.encode("hello world"))
'hello world'
"""

from fastllm._core import __version__, get_num_threads, set_num_threads
from fastllm.tokenizer import BPETokenizer, StreamDecoder

__all__ = [
    "BPETokenizer",
    "Engine",
    "MiniGPT",
    "MiniGPTConfig",
    "SamplingParams",
    "StreamDecoder",
    "TokenDataset",
    "TrainConfig",
    "Trainer",
    "__version__",
    "attention",
    "get_num_threads",
    "set_num_threads",
]

# Imported on first use so that `import fastllm` (and the CLI) does not import torch.
_LAZY = {
    "TokenDataset": "fastllm.dataset",
    "MiniGPT": "fastllm.model",
    "MiniGPTConfig": "fastllm.model",
    "attention": "fastllm._attention",
    "TrainConfig": "fastllm.train",
    "Trainer": "fastllm.train",
    "SamplingParams": "fastllm.generate",
    "Engine": "fastllm.engine",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastllm' has no attribute {name!r}")
