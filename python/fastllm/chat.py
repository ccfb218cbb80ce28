"""Chat templates: render a conversation into a prompt string exactly as Hugging Face does.

A chat template is a Jinja2 program that turns `messages` (a list of `{"role", "content"}` dicts)
into the text a chat model was trained on. `apply_chat_template` renders one with the semantics of
`transformers`' `tokenizer.apply_chat_template(..., tokenize=False)`: a sandboxed, immutable Jinja
environment with `trim_blocks`/`lstrip_blocks` and loop controls; the globals `raise_exception`,
`strftime_now`, `dict` and `namespace`; a `tojson` filter that does not escape HTML; keys whose value
is None are dropped from each message; `tools` and `documents` are None unless given; the
`{% generation %}` block renders its body. The output equals transformers' for the same template,
messages and special tokens (tests/test_chat.py checks this on ChatML, Llama-3 and Zephyr templates).

>>> msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
>>> print(apply_chat_template(msgs, add_generation_prompt=True), end="")
<|im_start|>system
Be brief.<|im_end|>
<|im_start|>user
Hi<|im_end|>
<|im_start|>assistant

A template may refuse a conversation with `raise_exception`; that is a `ChatTemplateError` (a
ValueError), and so is any other error the template meets while rendering:

>>> apply_chat_template(msgs, "{{ raise_exception('roles must alternate') }}")
Traceback (most recent call last):
...
fastllm.chat.ChatTemplateError: the chat template refused the messages: roles must alternate
>>> apply_chat_template([{"role": "user"}], "{{ messages[0].content + 1 }}")
Traceback (most recent call last):
...
fastllm.chat.ChatTemplateError: the chat template failed: 'dict object' has no attribute 'content'

Where a template comes from (`load_chat_template`): the `chat_template` of `tokenizer_config.json`
beside the checkpoint (a string, or Hugging Face's list of `{"name", "template"}` entries, of which
"default" is taken) when present, else a template file (`--chat-template FILE`), else ChatML
(`CHATML_TEMPLATE`). Files are read with bounds: a template over 1 MiB, a tokenizer_config.json over
16 MiB, bytes that are not UTF-8 or JSON that does not parse are a ValueError naming the path.

>>> load_chat_template() == CHATML_TEMPLATE
True
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.exceptions
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

__all__ = [
    "CHATML_TEMPLATE",
    "MAX_CONFIG_BYTES",
    "MAX_TEMPLATE_BYTES",
    "ChatTemplateError",
    "apply_chat_template",
    "load_chat_template",
]

# The common ChatML template (as in Hugging Face's chat-templating guide), except that a message
# without content renders as empty text instead of failing.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' "
    "+ (message['content'] if message['content'] is string else '') + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

MAX_TEMPLATE_BYTES = 1 << 20
MAX_CONFIG_BYTES = 16 << 20


class ChatTemplateError(ValueError):
    """A chat template that does not compile, refuses the messages (`raise_exception`) or fails."""


class _Refused(jinja2.exceptions.TemplateError):
    """What `raise_exception(message)` raises inside a template."""


def _raise_exception(message: Any) -> None:
    raise _Refused(str(message))


def _tojson(x: Any, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False) -> str:
    # transformers' filter: Jinja's own `tojson` escapes HTML characters, chat templates expect plain JSON.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


class _TemplateDict:
    """`dict(...)` and `dict.fromkeys(...)` inside a template, without the type's other attributes."""

    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's `namespace` refusing underscore-prefixed attributes (as transformers does)."""

    def __init__(*args, **kwargs):  # noqa: N805 - Jinja's signature trick, so `namespace(self=...)` works
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(
                f"chat templates cannot store underscore-prefixed attributes on a namespace, got {name!r}"
            )


class _Generation(jinja2.ext.Extension):
    """`{% generation %}...{% endgeneration %}` (transformers' assistant-mask marker) renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


@functools.lru_cache(maxsize=64)
def _compile(source: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_Generation, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    try:
        return env.from_string(source)
    except jinja2.exceptions.TemplateSyntaxError as e:
        raise ChatTemplateError(f"the chat template does not compile: {e} (line {e.lineno})") from None


def _plain(value: Any) -> Any:
    """A copy made of plain JSON-like types: what the sandbox may safely see (as transformers does).

    Anything else becomes an inert placeholder naming its type, e.g. "<ndarray>".
    """
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    return f"<{type(value).__name__}>"


# Names a message's reasoning is passed under; the first is the one templates read (as transformers).
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def _check_messages(messages: Any) -> list[dict]:
    """The messages as the template sees them: validated, None-valued keys dropped, plain copies."""
    if not isinstance(messages, (list, tuple)):
        raise TypeError(f"messages must be a list of dicts, got {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty: a chat template needs at least one message")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"messages[{i}] must be a dict, got {type(message).__name__}")
        if "role" not in message:
            raise ValueError(f"messages[{i}] has no 'role'")
        role = message["role"]
        if not isinstance(role, str):
            raise TypeError(f"messages[{i}]['role'] must be a str, got {type(role).__name__}")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError(f"messages[{i}]['content'] must be a str or None, got {type(content).__name__}")
        for key in message:
            if not isinstance(key, str):
                raise TypeError(f"messages[{i}] has a key that is not a str: {key!r}")
        plain = {k: _plain(v) for k, v in message.items() if v is not None}
        reasoning = next((plain[k] for k in _REASONING_FIELDS if k in plain), None)
        if reasoning is not None:
            plain = {"thinking": reasoning, **plain, "reasoning_content": reasoning}
        out.append(plain)
    return out


def apply_chat_template(
    messages: list[dict],
    template: str | None = None,
    *,
    add_generation_prompt: bool = False,
    bos_token: str = "",
    eos_token: str = "",
    **extra: Any,
) -> str:
    """Render `messages` with a Jinja chat template (None: `CHATML_TEMPLATE`), as transformers does.

    `messages`: dicts with a str "role" and a str or None "content" (a missing content is None);
    other keys (`tool_calls`, `name`, ...) pass through to the template. `extra` becomes template
    variables too (`tools`, `documents`, `enable_thinking`, ...). Raises TypeError/ValueError naming
    the message index and field for bad messages, `ChatTemplateError` for a template that does not
    compile, calls `raise_exception` or fails while rendering. An empty conversation is a ValueError
    (as in transformers).

    >>> apply_chat_template([{"role": "user", "content": "Hi"}], "{{ bos_token }}{{ messages[0].content }}",
    ...                     bos_token="<s>")
    '<s>Hi'
    """
    if template is None:
        template = CHATML_TEMPLATE
    if not isinstance(template, str):
        raise TypeError(f"template must be a str or None, got {type(template).__name__}")
    for name, value in (("bos_token", bos_token), ("eos_token", eos_token)):
        if not isinstance(value, str):
            raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    chat = _check_messages(messages)
    compiled = _compile(template)
    variables = {"tools": None, "documents": None, "bos_token": bos_token, "eos_token": eos_token}
    variables.update(_plain(extra))
    try:
        return compiled.render(messages=chat, add_generation_prompt=bool(add_generation_prompt), **variables)
    except _Refused as e:
        raise ChatTemplateError(f"the chat template refused the messages: {e}") from None
    except jinja2.exceptions.TemplateError as e:
        raise ChatTemplateError(f"the chat template failed: {e}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError, RecursionError) as e:
        raise ChatTemplateError(f"the chat template failed: {type(e).__name__}: {e}") from None


def _read_bounded(path: Path, limit: int, what: str) -> str:
    """The UTF-8 text of `path`, refused (ValueError naming the path) past `limit` bytes."""
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a directory, not a file")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path} does not exist") from None
    if len(data) > limit:
        raise ValueError(f"{what} {path} is larger than {limit:,} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


def _template_from_config(config_path: Path) -> str | None:
    """The chat template in a tokenizer_config.json, or None when it has none."""
    text = _read_bounded(config_path, MAX_CONFIG_BYTES, "tokenizer config")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"tokenizer config {config_path} is not valid JSON: {e}") from None
    if not isinstance(config, dict):
        raise ValueError(f"tokenizer config {config_path} is not a JSON object")
    template = config.get("chat_template")
    if template is None:
        return None
    if isinstance(template, list):
        # Hugging Face's form for several templates: [{"name": ..., "template": ...}, ...].
        named = {}
        for i, entry in enumerate(template):
            if not (
                isinstance(entry, dict)
                and isinstance(entry.get("name"), str)
                and isinstance(entry.get("template"), str)
            ):
                raise ValueError(
                    f"tokenizer config {config_path}: chat_template[{i}] is not a "
                    "{'name', 'template'} object"
                )
            named[entry["name"]] = entry["template"]
        if "default" not in named:
            raise ValueError(
                f"tokenizer config {config_path}: chat_template has no 'default' entry "
                f"(names: {sorted(named)})"
            )
        template = named["default"]
    if not isinstance(template, str):
        raise ValueError(
            f"tokenizer config {config_path}: chat_template must be a string or a list of "
            f"{{'name', 'template'}} objects, got {type(template).__name__}"
        )
    if len(template.encode("utf-8")) > MAX_TEMPLATE_BYTES:
        raise ValueError(
            f"tokenizer config {config_path}: chat_template is larger than {MAX_TEMPLATE_BYTES:,} bytes"
        )
    return template


def load_chat_template(
    model_dir: str | os.PathLike[str] | None = None, template_file: str | os.PathLike[str] | None = None
) -> str:
    """The chat template to use: tokenizer_config.json's beside the checkpoint, else the file, else ChatML.

    `model_dir` is the checkpoint's folder (or a file in it); its tokenizer_config.json is read when
    it exists and has a `chat_template`. `template_file` is a Jinja file (`--chat-template FILE`), at
    most `MAX_TEMPLATE_BYTES`.
    """
    if model_dir is not None:
        folder = Path(model_dir)
        if folder.is_file():
            folder = folder.parent
        config_path = folder / "tokenizer_config.json"
        if config_path.exists():
            template = _template_from_config(config_path)
            if template is not None:
                return template
    if template_file is not None:
        return _read_bounded(Path(template_file), MAX_TEMPLATE_BYTES, "chat template file")
    return CHATML_TEMPLATE
