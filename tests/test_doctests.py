"""The `>>>` examples in the package's docstrings run and print what they say.

Oracle: the docstrings themselves (doctest), run against the installed package. Every module is
collected by walking the package, so a module added later is covered without editing this file;
the public facades must have examples.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import fastllm

# Imported only with triton and a GPU (or the interpreter): test_kernels.py covers them.
_NEEDS_TRITON = {"fastllm.kernels.flash", "fastllm.kernels.paged"}
_MODULES = sorted(
    {"fastllm"}
    | {
        m.name
        for m in pkgutil.walk_packages(fastllm.__path__, "fastllm.")
        if m.name not in _NEEDS_TRITON and m.name != "fastllm.__main__"
    }
)
# The user-facing modules: each shows how it is used.
_MUST_HAVE_EXAMPLES = {
    "fastllm",
    "fastllm.tokenizer",
    "fastllm.chat",
    "fastllm.config",
    "fastllm.dedup",
    "fastllm.data.dedup",
    "fastllm.data.dataset",
    "fastllm.model",
    "fastllm.model.gpt",
    "fastllm.model.attention",
    "fastllm.model.losses",
    "fastllm.model.hf",
    "fastllm.train.trainer",
    "fastllm.train.checkpoint",
    "fastllm.train.device",
    "fastllm.model.rope",
    "fastllm.model.cache",
    "fastllm.generation",
    "fastllm.generation.sampling",
    "fastllm.generation.loop",
    "fastllm.generation.contiguous",
    "fastllm.generation.decode",
    "fastllm.generation.engine",
    "fastllm.generation.kvcache",
}


def test_every_facade_is_walked():
    assert _MUST_HAVE_EXAMPLES <= set(_MODULES)


@pytest.mark.parametrize("name", _MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    if name in _MUST_HAVE_EXAMPLES:
        assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
