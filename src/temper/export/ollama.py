"""An Ollama `Modelfile` for an exported GGUF or merged safetensors folder: FROM, TEMPLATE (Go template
syntax), stop tokens, SYSTEM.

Ollama renders prompts with Go templates, not Jinja, so the model's Jinja chat template is translated. We only
translate what we can prove equal: the template is rendered for a probe conversation and compared with the
ChatML rendering; when they agree the ChatML Go template below is written. Otherwise the Modelfile has no
TEMPLATE line and Ollama falls back to the chat template stored with the model (it recognises common ones).

Example:
    >>> print(modelfile_text("./model-q8_0.gguf", tok))  # doctest: +SKIP
    FROM ./model-q8_0.gguf
    TEMPLATE \"\"\"...
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

# ChatML in Ollama's Go template syntax. Ollama puts the Modelfile SYSTEM prompt (or the caller's system
# message) first in .Messages, so one loop renders every turn; the tail opens the assistant turn.
CHATML_GO_TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"
_PROBE = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]


def _chatml(messages: list[dict[str, str]]) -> str:
    turns = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return turns + "<|im_start|>assistant\n"


def is_chatml(tok: Any) -> bool:
    """True when the tokenizer's chat template renders a probe conversation exactly as ChatML does."""
    if not isinstance(getattr(tok, "chat_template", None), str):
        return False
    try:
        rendered = tok.apply_chat_template(_PROBE, add_generation_prompt=True, tokenize=False)
    except Exception:  # a template that rejects the probe (e.g. no system role) is not ChatML
        return False
    return bool(rendered == _chatml(_PROBE))


def default_system_prompt(tok: Any) -> str | None:
    """The system prompt the template inserts when the conversation has none (SmolLM2 has one)."""
    if not is_chatml(tok):
        return None
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "U"}], add_generation_prompt=True, tokenize=False
    )
    match = re.match(r"<\|im_start\|>system\n(.*?)<\|im_end\|>\n", rendered, flags=re.S)
    return match.group(1) if match else None


def stop_tokens(tok: Any) -> list[str]:
    """Strings that end a reply: the end-of-turn markers for ChatML, otherwise the EOS token."""
    stops = ["<|im_start|>", "<|im_end|>"] if is_chatml(tok) else []
    eos = getattr(tok, "eos_token", None)
    if isinstance(eos, str) and eos not in stops:
        stops.append(eos)
    return stops


def _quote(text: str) -> str:
    # Modelfile values in triple quotes may not contain triple quotes themselves.
    return '"""' + text.replace('"""', '\\"\\"\\"') + '"""'


def modelfile_text(model: str, tok: Any, system: str | None = None) -> str:
    """The Modelfile content for `model`, relative to the Modelfile's folder: a GGUF file (`./model-q8_0.gguf`)
    or `.`, the safetensors folder the Modelfile is in (Ollama imports llama, mistral, gemma and phi3 ones)."""
    lines = [f"FROM {model}"]
    if is_chatml(tok):
        lines.append(f"TEMPLATE {_quote(CHATML_GO_TEMPLATE)}")
    else:
        lines.append(
            "# No TEMPLATE: this chat template is not ChatML; Ollama uses the one stored with the model."
        )
    lines += [f'PARAMETER stop "{s}"' for s in stop_tokens(tok)]
    system = system if system is not None else default_system_prompt(tok)
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    return "\n".join(lines) + "\n"


def write_modelfile(out_dir: Path, model_file: str, tok: Any, system: str | None = None) -> Path:
    """Write out_dir/Modelfile for out_dir/model_file ("." for the folder itself); `ollama create NAME -f
    out_dir/Modelfile` then imports the model."""
    path = out_dir / "Modelfile"
    target = "." if model_file == "." else f"./{model_file}"
    path.write_text(modelfile_text(target, tok, system), encoding="utf-8")
    return path
