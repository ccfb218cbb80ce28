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
    "MinHashDeduper",
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
    "MinHashDeduper": "fastllm.data.dedup",
    "TokenDataset": "fastllm.data.dataset",
    "MiniGPT": "fastllm.model.gpt",
    "MiniGPTConfig": "fastllm.config",
    "attention": "fastllm.model.attention",
    "TrainConfig": "fastllm.config",
    "Trainer": "fastllm.train.trainer",
    "SamplingParams": "fastllm.generation.sampling",
    "Engine": "fastllm.generation.engine",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'fastllm' has no attribute {name!r}")
