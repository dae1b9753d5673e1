"""What each LiteLLM provider prefix is in routekit's terms: a provider kind, the endpoint
LiteLLM would use, and the environment variable it reads the key from (``routekit import
litellm``). Only prefixes whose endpoint speaks the OpenAI chat API are here; the importer
says why every other one is not imported.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOOPBACK", "PRESETS", "Preset"]


@dataclass(frozen=True)
class Preset:
    kind: str
    base_url: str | None  # None: LiteLLM's default for the kind (OpenAI's own API)
    key_env: str | None  # the variable LiteLLM reads when the config names no key
    note: str = ""


_LOCAL = "http://127.0.0.1"
# LiteLLM provider prefixes whose endpoint speaks the OpenAI chat API.
PRESETS: dict[str, Preset] = {
    "openai": Preset("openai", None, "OPENAI_API_KEY"),
    "ollama": Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "ollama_chat": Preset("ollama", f"{_LOCAL}:11434/v1", None),
    "hosted_vllm": Preset("vllm", f"{_LOCAL}:8000/v1", None),
    "vllm": Preset("vllm", f"{_LOCAL}:8000/v1", None,
                   "LiteLLM's vllm/ runs vLLM inside the proxy; routekit talks to a vLLM "
                   "server (vllm serve) at this URL"),
    "llamafile": Preset("llama_cpp_server", f"{_LOCAL}:8080/v1", None),
    "lm_studio": Preset("llama_cpp_server", f"{_LOCAL}:1234/v1", None),
    "groq": Preset("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "together_ai": Preset("openai", "https://api.together.xyz/v1", "TOGETHERAI_API_KEY"),
    "deepseek": Preset("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    "mistral": Preset("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    "openrouter": Preset("openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "fireworks_ai": Preset("openai", "https://api.fireworks.ai/inference/v1",
                           "FIREWORKS_AI_API_KEY"),
    "xai": Preset("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    "perplexity": Preset("openai", "https://api.perplexity.ai", "PERPLEXITYAI_API_KEY"),
    "deepinfra": Preset("openai", "https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
}
LOOPBACK = {"localhost", "127.0.0.1", "0.0.0.0", "::1", "host.docker.internal"}
