"""The `>>>` examples in the package's docstrings run and print what they say.

Oracle: the docstrings themselves (doctest), run against the installed package.
"""

from __future__ import annotations

import doctest

import pytest

import fastllm
import fastllm._attention
import fastllm.config
import fastllm.dataset
import fastllm.dedup
import fastllm.engine
import fastllm.generate
import fastllm.losses
import fastllm.model
import fastllm.train
import fastllm.tokenizer


@pytest.mark.parametrize("module", [fastllm, fastllm.tokenizer, fastllm.dedup, fastllm.model, fastllm._attention, fastllm.losses, fastllm.train, fastllm.dataset, fastllm.config, fastllm.generate, fastllm.engine], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module.__name__} has no examples"
    assert result.failed == 0
