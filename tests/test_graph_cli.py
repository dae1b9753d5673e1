"""``routekit graph``: Mermaid and DOT text with providers as clusters, terminals marked,
cycles highlighted, names escaped; rendered by Graphviz where it is installed."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_cli import EXAMPLES, routekit, write  # noqa: E402

from routekit import load_config  # noqa: E402
from routekit._graph_text import render_graph  # noqa: E402


def _node_ids(text: str, label: str) -> list[str]:
    return re.findall(rf'(m\d+)\[\[?"{re.escape(label)}', text)


def test_mermaid_seed_marks_the_cycle_and_the_terminal() -> None:
    text = routekit("graph", str(EXAMPLES / "seed.yaml"), code=0).stdout
    lines = text.splitlines()
    assert lines[0] == "flowchart LR"
    # one cluster per provider, with its kind
    assert [ln.strip() for ln in lines if ln.strip().startswith("subgraph")] == [
        'subgraph p0["ollama (ollama)"]', 'subgraph p1["cloud (openai)"]',
        'subgraph p2["llama-cpp (llama_cpp)"]',
        'subgraph p3["llama-cpp-native (llama_cpp_native)"]']
    assert text.count("\n  end\n") == 4
    # the only terminal has the double-bordered shape and the terminal class
    (native,) = _node_ids(text, "llama-cpp-native")
    assert f'{native}[["llama-cpp-native<br/>tier: local"]]' in text
    assert f"  class {native} terminal" in lines
    # edges in chain order with their positions; the two cycle edges are red
    edges = [ln.strip() for ln in lines if "-->" in ln]
    assert len(edges) == 6 and edges[0] == "m0 -->|1| m2" and edges[1] == "m0 -->|2| m1"
    red = next(ln for ln in lines if ln.strip().startswith("linkStyle"))
    indexes = [int(i) for i in red.split()[1].split(",")]
    assert sorted(edges[i] for i in indexes) == ["m1 -->|1| m2", "m2 -->|2| m1"]
    # in-process providers are shaded
    assert "  style p2 fill:#e8f5e9" in lines and "  style p3 fill:#e8f5e9" in lines


def test_dot_multi_terminal_has_clusters_terminals_and_no_red() -> None:
    text = routekit("graph", str(EXAMPLES / "multi-terminal.yaml"), "--format", "dot",
                    code=0).stdout
    assert text.count("subgraph cluster_") == 6
    assert text.count("peripheries=2") == 4  # the four terminals of the example
    assert "#dd2222" not in text  # no cycles
    assert text.count("{") == text.count("}")
    config = load_config(EXAMPLES / "multi-terminal.yaml")
    edges = sum(len(c.chain) for c in config.fallback_chains.values())
    assert text.count(" -> ") == edges == 21  # every fallback edge of the example


def test_model_option_draws_only_what_the_entry_reaches() -> None:
    config = load_config(EXAMPLES / "multi-terminal.yaml")
    text = render_graph(config, model="phi3:mini")
    labels = re.findall(r'\["([^"<]+)', text)
    assert labels == ["ollama (ollama)", "llama3.2:3b", "phi3:mini",  # config order
                      "in-process-native (llama_cpp_native)", "gemma3-270m-native"]
    assert text.count("-->") == 2
    proc = routekit("graph", str(EXAMPLES / "multi-terminal.yaml"), "--model", "phi3:mni",
                    code=1)
    assert "did you mean 'phi3:mini'" in proc.stderr


def test_names_are_escaped_in_both_formats(tmp_path: Path) -> None:
    path = write(tmp_path, {"fallback_chains": {'we"ird<x>': {"chain": ["b\\c"]},
                                                "b\\c": {"chain": []}}})
    mermaid = routekit("graph", str(path), code=0).stdout
    assert 'we#quot;ird#lt;x#gt;' in mermaid and '"we"' not in mermaid
    dot = routekit("graph", str(path), "--format", "dot", code=0).stdout
    assert 'label="we\\"ird<x>' in dot and 'label="b\\\\c' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz (dot) is not installed")
@pytest.mark.parametrize("name", ["seed", "multi-terminal", "v1.7-single-terminal", "laptop"])
def test_graphviz_renders_the_examples(name: str) -> None:
    text = routekit("graph", str(EXAMPLES / f"{name}.yaml"), "--format", "dot", code=0).stdout
    proc = subprocess.run(["dot", "-Tsvg"], input=text, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "<svg" in proc.stdout


def test_graph_bad_input(tmp_path: Path) -> None:
    assert "no such file" in routekit("graph", str(tmp_path / "x.yaml"), code=1).stderr
    assert "invalid choice: 'png'" in routekit("graph", str(EXAMPLES / "seed.yaml"),
                                              "--format", "png", code=2).stderr
