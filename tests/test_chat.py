"""fastllm.chat: chat templates rendered as transformers renders them, and where templates come from.

Oracle: `transformers.PreTrainedTokenizerFast.apply_chat_template(..., tokenize=False)` on a tiny
tokenizer built offline with `tokenizers` (bos "<s>", eos "</s>", nothing else in its special-tokens
map), for the public ChatML, Llama-3, Zephyr and Mistral templates and one that exercises the
environment's extras; hypothesis draws the message contents. For `load_chat_template`, the order the
issue states, written as plain cases, and hostile files (table-driven).
"""

from __future__ import annotations

import json
import re

import jinja2.exceptions
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from fastllm.chat import (
    CHATML_TEMPLATE,
    MAX_TEMPLATE_BYTES,
    ChatTemplateError,
    apply_chat_template,
    load_chat_template,
)

BOS, EOS = "<s>", "</s>"

# Public forms (teknium/OpenHermes-2.5 ChatML, meta-llama/Meta-Llama-3-8B-Instruct,
# HuggingFaceH4/zephyr-7b-beta, mistralai/Mistral-7B-Instruct-v0.1).
CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
    "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
ZEPHYR = (
    "{% for message in messages %}\n{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] "
    "+ eos_token }}\n{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + "
    "eos_token }}\n{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + "
    "eos_token }}\n{% endif %}\n{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n"
    "{% endif %}\n{% endfor %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)
# The environment's extras: namespace, loop controls, tojson (no HTML escaping), dict(), the
# generation block, tools/documents None by default, a missing (None) content, an extra variable.
EXTRAS = (
    "{%- set ns = namespace(n=0) -%}\n"
    "{%- for m in messages -%}\n"
    "  {%- if m.role == 'skip' %}{% continue %}{% endif -%}\n"
    "  {%- set ns.n = ns.n + 1 -%}\n"
    "  {{ ns.n }}:{{ m | tojson }}|{{ dict(a=1) | tojson }}\n"
    "  {% if m.content is defined %}{% generation %}{{ m.content }}{% endgeneration %}"
    "{% else %}(none){% endif %}\n"
    "  {%- if ns.n > 3 %}{% break %}{% endif %}\n"
    "{%- endfor -%}\n"
    "tools={{ tools is none }} docs={{ documents is none }} think={{ enable_thinking | default('unset') }}"
    "{{ eos_token if add_generation_prompt }}"
)
TEMPLATES = {"chatml": CHATML, "llama3": LLAMA3, "zephyr": ZEPHYR, "mistral": MISTRAL, "extras": EXTRAS}


@pytest.fixture(scope="module")
def hf():
    tok = Tokenizer(models.WordLevel({"<unk>": 0, BOS: 1, EOS: 2}, unk_token="<unk>"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS)
    assert fast.special_tokens_map == {"bos_token": BOS, "eos_token": EOS}
    return fast


def _hf_render(hf, template, messages, add_generation_prompt, **extra):
    return hf.apply_chat_template(
        messages,
        chat_template=template,
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        **extra,
    )


def _ours(template, messages, add_generation_prompt, **extra):
    return apply_chat_template(
        messages, template, add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS, **extra
    )


SYSTEM = [{"role": "system", "content": "You are terse."}]
TURNS = [
    {"role": "user", "content": "Hi there"},
    {"role": "assistant", "content": "  Hello! <b>&</b>  "},
    {"role": "user", "content": 'Ünïcødé 🙂 "quotes"\nnewline'},
]
CASES = {
    "one": TURNS[:1],
    "multi": TURNS,
    "system": SYSTEM + TURNS,
    "empty": [],
}


def _same_refusal(hf_error, template, messages, agp):
    """transformers refused: ours refuses with the same words (the template's, or an empty chat)."""
    if not messages:
        assert "empty conversation" in str(hf_error)
        with pytest.raises(ValueError, match="messages is empty"):
            _ours(template, messages, agp)
        return
    assert isinstance(hf_error, jinja2.exceptions.TemplateError)
    with pytest.raises(ChatTemplateError, match="refused the messages: " + re.escape(str(hf_error)) + "$"):
        _ours(template, messages, agp)


@pytest.mark.parametrize("add_generation_prompt", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_equals_transformers(hf, name, case, add_generation_prompt):
    template, messages = TEMPLATES[name], CASES[case]
    try:
        want = _hf_render(hf, template, messages, add_generation_prompt)
    except (ValueError, jinja2.exceptions.TemplateError) as e:  # Mistral: a system message; any: empty
        assert name == "mistral" or case == "empty"
        _same_refusal(e, template, messages, add_generation_prompt)
        return
    assert _ours(template, messages, add_generation_prompt) == want


def test_extras_equal_transformers(hf):
    messages = [
        {"role": "user", "content": "a<b>"},
        {"role": "skip", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [{"name": "f", "arguments": {"x": 1}}]},
        {"role": "user", "content": "é", "name": "bob"},
        {"role": "user", "content": "4"},
        {"role": "user", "content": "5 (after break)"},
    ]
    for extra in ({}, {"enable_thinking": False}):
        for agp in (False, True):
            want = _hf_render(hf, EXTRAS, messages, agp, **extra)
            assert _ours(EXTRAS, messages, agp, **extra) == want
    assert "(none)" in want and "5 (after break)" not in want and "<b>" in want


def test_strftime_now_and_extra_variables_equal_transformers(hf):
    template = "{{ strftime_now('%Y') }} {{ custom | tojson }} {{ bos_token }}"
    extra = {"custom": {"k": ["v", 1, None, True]}}
    assert _ours(template, U, False, **extra) == _hf_render(hf, template, U, False, **extra)


def test_default_is_chatml():
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]
    assert apply_chat_template(messages) == apply_chat_template(messages, CHATML_TEMPLATE)
    assert (
        apply_chat_template(messages) == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<|im_end|>\n"
    )
    text = [{"role": "user", "content": "Hi"}]
    assert apply_chat_template(text) == apply_chat_template(text, CHATML)


_text = st.text(st.characters(codec="utf-8"), max_size=40)


@st.composite
def _conversations(draw):
    n = draw(st.integers(1, 5))
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": draw(_text)} for i in range(n)]
    if draw(st.booleans()):
        msgs.insert(0, {"role": "system", "content": draw(_text)})
    return msgs


@settings(max_examples=60, deadline=None)
@given(messages=_conversations(), name=st.sampled_from(sorted(TEMPLATES)), agp=st.booleans())
def test_generated_contents_equal_transformers(hf, messages, name, agp):
    template = TEMPLATES[name]
    try:
        want = _hf_render(hf, template, messages, agp)
    except jinja2.exceptions.TemplateError as e:
        assert name == "mistral"
        _same_refusal(e, template, messages, agp)
        return
    assert _ours(template, messages, agp) == want


def test_raise_exception_is_our_error(hf):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(Exception, match="must alternate"):
        _hf_render(hf, MISTRAL, bad, False)
    with pytest.raises(ChatTemplateError, match="refused the messages: Conversation roles must alternate"):
        _ours(MISTRAL, bad, False)
    assert issubclass(ChatTemplateError, ValueError)


U = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "template, pattern",
    [
        ("{% for m in messages %}", "does not compile"),
        ("{{ raise_exception('nope') }}", "refused the messages: nope"),
        ("{{ messages[0].content + 1 }}", "failed: TypeError"),
        ("{{ 1 / 0 }}", "failed: ZeroDivisionError"),
        ("{{ ''.__class__.__mro__ }}", "failed"),  # the sandbox
        ("{{ messages.append(1) }}", "failed"),  # immutable: no mutation of the caller's data
        ("{% set ns = namespace(_x=1) %}", "underscore"),
        ("{{ undefined_thing.attr }}", "failed"),
        ("{% generation %}x", "does not compile"),
    ],
)
def test_template_errors(template, pattern):
    with pytest.raises(ChatTemplateError, match=pattern):
        apply_chat_template(U, template)


@pytest.mark.parametrize(
    "messages, exc, pattern",
    [
        (None, TypeError, "messages must be a list"),
        ([], ValueError, "messages is empty"),
        ({"role": "user", "content": "x"}, TypeError, "messages must be a list"),
        ("hello", TypeError, "messages must be a list"),
        (["hello"], TypeError, r"messages\[0\] must be a dict"),
        ([{"role": "user", "content": "x"}, 3], TypeError, r"messages\[1\] must be a dict"),
        ([{"content": "x"}], ValueError, r"messages\[0\] has no 'role'"),
        ([{"role": None, "content": "x"}], TypeError, r"messages\[0\]\['role'\] must be a str"),
        ([{"role": 1, "content": "x"}], TypeError, r"messages\[0\]\['role'\] must be a str, got int"),
        (
            U + [{"role": "user", "content": 5}],
            TypeError,
            r"messages\[1\]\['content'\] must be a str or None",
        ),
        (
            [{"role": "user", "content": [{"type": "text"}]}],
            TypeError,
            r"\['content'\] must be a str or None",
        ),
        ([{"role": "user", "content": b"x"}], TypeError, r"\['content'\] must be a str or None, got bytes"),
        ([{"role": "user", "content": "x", 1: 2}], TypeError, r"messages\[0\] has a key that is not a str"),
    ],
)
def test_bad_messages(messages, exc, pattern):
    with pytest.raises(exc, match=pattern):
        apply_chat_template(messages)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        ({"template": 3}, TypeError, "template must be a str or None"),
        ({"bos_token": None}, TypeError, "bos_token must be a str"),
        ({"eos_token": 2}, TypeError, "eos_token must be a str"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        apply_chat_template(U, **kwargs)


def test_compiles_once_and_leaves_caller_data_alone():
    from fastllm import chat

    messages = [{"role": "user", "content": "x", "extra": None}]
    template = "{{ messages | length }}{{ messages[0] | tojson }}"
    before = chat._compile.cache_info().misses
    for _ in range(3):
        assert apply_chat_template(messages, template) == '1{"role": "user", "content": "x"}'
    assert chat._compile.cache_info().misses == before + 1
    assert messages == [{"role": "user", "content": "x", "extra": None}]


# load_chat_template: tokenizer_config.json beside the checkpoint, then the file, then ChatML.


def _config(folder, **fields):
    (folder / "tokenizer_config.json").write_text(json.dumps(fields), encoding="utf-8")


def test_load_order(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    file = tmp_path / "t.jinja"
    file.write_text(ZEPHYR, encoding="utf-8")
    # Nothing: ChatML.
    assert load_chat_template() == CHATML_TEMPLATE
    assert load_chat_template(model) == CHATML_TEMPLATE
    # No tokenizer_config.json: the file.
    assert load_chat_template(model, file) == ZEPHYR
    # A config without a chat_template: the file, else ChatML.
    _config(model, bos_token=BOS)
    assert load_chat_template(model, file) == ZEPHYR
    assert load_chat_template(model) == CHATML_TEMPLATE
    # A config with one: it wins over the file; a checkpoint file inside the folder works too.
    _config(model, chat_template=LLAMA3)
    assert load_chat_template(model, file) == LLAMA3
    (model / "model.safetensors").write_bytes(b"")
    assert load_chat_template(str(model / "model.safetensors"), str(file)) == LLAMA3
    # HF's list form: the "default" entry.
    _config(
        model,
        chat_template=[{"name": "tool_use", "template": CHATML}, {"name": "default", "template": MISTRAL}],
    )
    assert load_chat_template(model, file) == MISTRAL


def _write(path, data):
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)


@pytest.mark.parametrize(
    "config, exc, pattern",
    [
        (b"{not json", ValueError, "tokenizer_config.json is not valid JSON"),
        (b"\xff\xfe{}", ValueError, "tokenizer_config.json is not UTF-8"),
        (b"[1, 2]", ValueError, "is not a JSON object"),
        (json.dumps({"chat_template": 3}), ValueError, "chat_template must be a string or a list"),
        (json.dumps({"chat_template": [{"name": "x", "template": "y"}]}), ValueError, "no 'default' entry"),
        (json.dumps({"chat_template": [{"name": "default"}]}), ValueError, r"chat_template\[0\] is not"),
        (json.dumps({"chat_template": ["x"]}), ValueError, r"chat_template\[0\] is not"),
        (json.dumps({"chat_template": "x" * (MAX_TEMPLATE_BYTES + 1)}), ValueError, "larger than"),
        ("dir", IsADirectoryError, "tokenizer_config.json is a directory"),
    ],
)
def test_hostile_tokenizer_config(tmp_path, config, exc, pattern):
    path = tmp_path / "tokenizer_config.json"
    if config == "dir":
        path.mkdir()
    else:
        _write(path, config)
    with pytest.raises(exc, match=pattern):
        load_chat_template(tmp_path, None)


@pytest.mark.parametrize(
    "content, exc, pattern",
    [
        (b"x" * (MAX_TEMPLATE_BYTES + 1), ValueError, r"t\.jinja is larger than 1,048,576 bytes"),
        (b"{{ messages }}\xc3", ValueError, r"t\.jinja is not UTF-8 text \(byte 14\)"),
        ("dir", IsADirectoryError, r"t\.jinja is a directory"),
        (None, FileNotFoundError, r"t\.jinja does not exist"),
    ],
)
def test_hostile_template_file(tmp_path, content, exc, pattern):
    path = tmp_path / "t.jinja"
    if content == "dir":
        path.mkdir()
    elif content is not None:
        _write(path, content)
    with pytest.raises(exc, match=pattern):
        load_chat_template(None, path)
    # A template of exactly the limit is read.
    _ok = tmp_path / "ok.jinja"
    _ok.write_bytes(b"x" * MAX_TEMPLATE_BYTES)
    assert len(load_chat_template(None, _ok)) == MAX_TEMPLATE_BYTES
