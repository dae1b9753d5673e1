"""What a config is: the data model (``model``), reading it from YAML with line numbers
(``loader``, ``yaml_lines``) and the built-in default chain (``default``)."""

from __future__ import annotations

from .loader import legacy_inferences, load_config, load_config_text
from .model import Config

__all__ = ["Config", "legacy_inferences", "load_config", "load_config_text"]
