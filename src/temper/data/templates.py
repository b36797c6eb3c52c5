"""Chat templates: THE one rendering used by training, inference, evaluation and serving.

The tokenizer's own chat template is used when it has one; `template` overrides it with a name from TEMPLATES
or a path to a Jinja file. Prompts are tokenized with `add_special_tokens=False` because the template already
writes every special token (a second BOS would differ from what the model was trained on).

    >>> tok = prepare_tokenizer(load_tokenizer("smollm2-135m-instruct"), None)  # doctest: +SKIP
    >>> render_prompt(tok, [{"role": "user", "content": "Who are you?"}])  # doctest: +SKIP
    '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM...<|im_start|>assistant\\n'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from temper.data.records import ChatExample
from temper.errors import TemperError

log = logging.getLogger(__name__)

# ChatML (Qwen, SmolLM2, ms-swift's `chatml`). Tools, when given, go into the system turn as JSON.
CHATML = (
    "{%- if tools %}{{- '<|im_start|>system\\n' }}"
    "{%- if messages[0]['role'] == 'system' %}{{- messages[0]['content'] + '\\n\\n' }}{%- endif %}"
    "{{- 'You may call these tools:\\n' + (tools | tojson) + '<|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (loop.first and message['role'] == 'system') %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# LLaMA-Factory's plain-text templates, for models without a chat format of their own (base models), written as
# its `llamafactory-cli` renders them, quirks included (no separator after a system prompt in alpaca and vicuna),
# so an adapter trained there is chatted with here as it learned (compared with LLaMA-Factory 0.9.5's encoder in
# the README, "Templates and masking"). Other roles (tools) are refused: these formats have no place for them.
_OTHER_ROLES = "{%- else %}{{- raise_exception('this template has no ' + message['role'] + ' role') }}"


def _plain(system: str, user: str, assistant: str, default_system: str = "") -> str:
    """A Jinja template of three turn formats (`{c}` is the content; `{eos}` the tokenizer's eos token)."""

    def turn(fmt: str) -> str:
        return (
            "{{- '"
            + fmt.replace("\n", "\\n")
            .replace("{c}", "' + message['content'] + '")
            .replace("{eos}", "' + eos_token + '")
            + "' }}"
        )

    head = (
        "{%- if messages and messages[0]['role'] == 'system' %}{%- set loop_messages = messages %}"
        + (
            "{%- else %}{%- set loop_messages = [{'role': 'system', 'content': "
            + json.dumps(default_system)
            + "}] + messages %}"
            if default_system
            else "{%- else %}{%- set loop_messages = messages %}"
        )
        + "{%- endif %}"
    )
    return (
        head
        + "{%- for message in loop_messages %}"
        + "{%- if message['role'] == 'system' %}"
        + turn(system)
        + "{%- elif message['role'] == 'user' %}"
        + turn(user)
        + "{%- elif message['role'] == 'assistant' %}"
        + turn(assistant)
        + _OTHER_ROLES
        + "{%- endif %}{%- endfor %}"
    )


# Plain dict registry of built-in templates: name -> (Jinja source, the special tokens it writes).
TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (CHATML, ("<|im_start|>", "<|im_end|>")),
    "default": (_plain("System: {c}{eos}\n", "Human: {c}{eos}\nAssistant:", "{c}{eos}\n"), ()),
    "alpaca": (
        _plain(
            "{c}",
            "### Instruction:\n{c}\n\n### Response:\n",
            "{c}{eos}\n\n",
            "Below is an instruction that describes a task. Write a response that appropriately completes the "
            "request.\n\n",
        ),
        (),
    ),
    "vicuna": (
        _plain(
            "{c}",
            "USER: {c} ASSISTANT:",
            "{c}{eos}",
            "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
            "detailed, and polite answers to the user's questions.",
        ),
        (),
    ),
    "empty": (_plain("{c}", "{c}", "{c}"), ()),
}

# LLaMA-Factory's `template` names for model families' own chat formats -> a token that format writes. A model
# whose own chat template writes it already carries that format, so the name keeps the model's template (a
# LLaMA-Factory YAML then trains as it is); any other model gets the unknown-template error.
PEER_TEMPLATES: dict[str, str] = {
    **dict.fromkeys(("qwen", "qwen2", "qwen3", "qwen3_nothink", "smollm", "smollm2", "yi"), "<|im_start|>"),
    **dict.fromkeys(("llama3", "llama4"), "<|start_header_id|>"),
    **dict.fromkeys(("llama2", "mistral", "ministral"), "[INST]"),
    **dict.fromkeys(("gemma", "gemma2", "gemma3"), "<start_of_turn>"),
    "phi": "<|assistant|>",
    "phi4": "<|im_sep|>",
    "glm4": "<|assistant|>",
    "deepseek3": "<｜Assistant｜>",
}
# The default system prompt LLaMA-Factory's template of that name puts in conversations without one, where it
# differs from the model's own (SmolLM2's own template has no final period): an adapter LLaMA-Factory trained
# with `template: smollm2` saw this text, so the same name renders it here too.
PEER_DEFAULT_SYSTEMS: dict[str, str] = {
    "smollm2": "You are a helpful AI assistant named SmolLM, trained by Hugging Face.",
    "qwen": "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
}


def prepare_tokenizer(tokenizer: Any, template: str | None = None, system: str | None = None) -> Any:
    """Give the tokenizer a chat template: its own, or `template` (a TEMPLATES name or a Jinja file path).

    Raises TemperError when there is neither. With a built-in template whose end-of-turn token the vocabulary
    lacks, that token is added as a special token (so the embedding matrix must be resized by the caller).
    `system` (training's --system) becomes the template's default system prompt (with_default_system), so the
    run's saved tokenizer renders at inference what the model was trained on.

    >>> tok = prepare_tokenizer(tok, "chatml")  # doctest: +SKIP
    """
    if template:
        if template in TEMPLATES:
            source, specials = TEMPLATES[template]
            missing = [t for t in specials if t not in tokenizer.get_vocab()]
            if missing:
                tokenizer.add_tokens(missing, special_tokens=True)
        elif Path(template).is_file():
            source = Path(template).read_text(encoding="utf-8")
        elif template in PEER_TEMPLATES and PEER_TEMPLATES[template] in _own_template(tokenizer):
            log.warning("template %s: this model's own chat template is that format, and is used", template)
            source = _own_template(tokenizer)
            if (
                system is None
                and template in PEER_DEFAULT_SYSTEMS
                and not source.startswith(_DEFAULT_SYSTEM_MARK)
            ):
                system = PEER_DEFAULT_SYSTEMS[template]  # a run's own default (its --system) stays
        else:
            own = _own_template(tokenizer)
            hint = "Pass --template chatml or a path to a Jinja chat template."
            if own and template in PEER_TEMPLATES:
                hint = (
                    f"LLaMA-Factory's template {template!r} writes {PEER_TEMPLATES[template]}, which this model's "
                    "own chat template does not: it is another model family's format. Leave template out to use "
                    "the model's own, or pass a Jinja file."
                )
            elif own:
                hint = "Leave template out to use the model's own chat template, or pass a built-in name or a Jinja file."
            raise TemperError(
                f"unknown template {template!r}: not a built-in name ({', '.join(TEMPLATES)}) nor an existing file.",
                hint=hint,
            )
        tokenizer.chat_template = source
    if not getattr(tokenizer, "chat_template", None):
        raise TemperError(
            f"the tokenizer of {getattr(tokenizer, 'name_or_path', 'this model')!r} has no chat template.",
            hint=f"Pass --template with a built-in name ({', '.join(TEMPLATES)}) or a Jinja file path.",
        )
    if system is not None:
        tokenizer.chat_template = with_default_system(tokenizer.chat_template, system)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


# Marks the default-system preamble, so that a run trained on a run replaces it instead of stacking another.
_DEFAULT_SYSTEM_MARK = "{#- temper: default system prompt -#}"


def with_default_system(source: Any, system: str) -> Any:
    """`source` (a Jinja chat template) with `system` as the system turn of any conversation that has none.

    Training's --system fills rows without a system prompt; a model's own template may insert another default
    (SmolLM2: "You are a helpful AI assistant named SmolLM ..."), so without this, chat would render a prompt
    the model was not trained on. LLaMA-Factory keeps its `default_system` in the template it saves, and
    ms-swift its --system in args.json; this keeps it in the run's chat template, which every verb reads.
    A named set of templates (a dict) is left as it is.
    """
    if not isinstance(source, str):
        log.warning(
            "this tokenizer has several chat templates; the default system prompt is not stored in them"
        )
        return source
    if source.startswith(_DEFAULT_SYSTEM_MARK):
        source = source.split(_DEFAULT_SYSTEM_MARK, 2)[2]
    # JSON's string syntax is a valid Jinja string literal: quotes, backslashes and newlines stay escaped.
    literal = json.dumps(system, ensure_ascii=False)
    preamble = (
        "{%- if not messages or messages[0]['role'] != 'system' %}"
        "{%- set messages = [{'role': 'system', 'content': " + literal + "}] + messages %}{%- endif %}"
    )
    return _DEFAULT_SYSTEM_MARK + preamble + _DEFAULT_SYSTEM_MARK + source


def inherited_system_note(
    tokenizer: Any, system: str | None, model: str, template_name: str | None = None
) -> str | None:
    """The line a run prints when its chat template already carries a default system prompt (the model is a run
    trained with --system, or `template_name` names a LLaMA-Factory template with its own default) and this run sets
    none: its rows without one are trained with that prompt."""
    template = tokenizer.chat_template
    if system is not None or not isinstance(template, str) or not template.startswith(_DEFAULT_SYSTEM_MARK):
        return None
    preamble = template.split(_DEFAULT_SYSTEM_MARK, 2)[1]
    inherited = json.loads(preamble.split("'content': ", 1)[1].rsplit("}] + messages", 1)[0])
    peer = template_name is not None and PEER_DEFAULT_SYSTEMS.get(template_name) == inherited
    source = f"LLaMA-Factory's {template_name!r} template" if peer else f"{model}'s chat template"
    return (
        f"default system prompt {inherited!r}, from {source}: rows without one are trained with it (pass "
        "--system to change it)"
    )


def _own_template(tokenizer: Any) -> str:
    own = getattr(tokenizer, "chat_template", None)
    return own if isinstance(own, str) else ""


def to_chat_dicts(example: ChatExample, default_system: str | None = None) -> list[dict[str, str]]:
    """A ChatExample as role/content dicts, system first; `default_system` (--system) fills a missing one.

    >>> from temper.data.records import Message
    >>> to_chat_dicts(ChatExample([Message("user", "hi")]), "Be brief.")
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'hi'}]
    """
    system = example.system if example.system is not None else default_system
    head = [{"role": "system", "content": system}] if system else []
    return head + [{"role": m.role, "content": m.content} for m in example.messages]


def _tools_list(tools: str | list[Any] | None) -> list[Any] | None:
    if tools is None:
        return None
    parsed = json.loads(tools) if isinstance(tools, str) else tools
    return parsed if isinstance(parsed, list) else [parsed]


def render_prompt(
    tokenizer: Any,
    messages: list[dict[str, str]],
    add_generation_prompt: bool = True,
    tools: str | list[Any] | None = None,
) -> str:
    """Render messages with the tokenizer's chat template; with `add_generation_prompt` ends where the reply starts.

    Templates that ignore `tools` get them appended to the system prompt, so tool rows are never silently
    stripped of their definitions.

    >>> render_prompt(tok, [{"role": "user", "content": "hi"}])  # doctest: +SKIP
    """
    tool_list = _tools_list(tools)
    template = tokenizer.chat_template or ""
    if tool_list and "tools" not in template:
        text = "You may call these tools:\n" + json.dumps(tool_list, ensure_ascii=False)
        if messages and messages[0]["role"] == "system":
            messages = [{"role": "system", "content": messages[0]["content"] + "\n\n" + text}, *messages[1:]]
        else:
            messages = [{"role": "system", "content": text}, *messages]
        tool_list = None
    from jinja2 import TemplateError

    try:
        out = tokenizer.apply_chat_template(
            messages, tools=tool_list, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except TemplateError as exc:
        # The template's own refusal (raise_exception): a role or an order it cannot write.
        roles = " -> ".join(m["role"] for m in messages)
        raise TemperError(
            f"the chat template cannot render this conversation ({roles}): {exc}",
            hint="Use a template that has these roles (--template chatml, a Jinja file, or the model's own).",
        ) from None
    return str(out)


def prompt_ids(
    tokenizer: Any, messages: list[dict[str, str]], tools: str | list[Any] | None = None
) -> list[int]:
    """Token ids of the generation prompt, exactly as training saw the tokens before a reply.

    >>> ids = prompt_ids(tok, [{"role": "user", "content": "hi"}])  # doctest: +SKIP
    """
    return list(
        tokenizer(render_prompt(tokenizer, messages, True, tools), add_special_tokens=False)["input_ids"]
    )
