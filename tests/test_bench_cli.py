"""``routekit bench`` end to end: in-process paths on a tiny GGUF, the server path on the
real model, the chart, and clear errors. Figures are reported, never judged."""

from __future__ import annotations

import json
from pathlib import Path

from test_cli import routekit
from tinygguf import write_tiny_gguf


def test_bench_in_process_paths_json_and_plot(tmp_path: Path) -> None:
    model = write_tiny_gguf(tmp_path / "tiny.gguf")
    png = tmp_path / "bench.png"
    proc = routekit("bench", "--model", str(model), "--chat-format", "chatml", "--rounds", "2",
                    "--max-tokens", "6", "--threads", "1", "--settle", "0", "--json",
                    "--plot", str(png), timeout=180, code=0)
    data = json.loads(proc.stdout)
    assert data["model_path"] == str(model) and data["device"].startswith("CPU")
    paths = {p["path"]: p for p in data["paths"]}
    assert set(paths) == {"routekit in-process (llama_cpp)",
                          "routekit in-process (llama_cpp_native)"}
    for p in paths.values():
        assert len(p["ttfb_ms"]) == 2 and all(t > 0 for t in p["ttfb_ms"]), p
        assert p["ttfb_ms_median"] > 0 and p["tokens_per_s_median"] >= 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_against_the_server_prints_a_table(gemma_path: Path) -> None:
    proc = routekit("bench", "--model", str(gemma_path), "--chat-format", "snoozy",
                    "--server", "--no-native", "--rounds", "1", "--max-tokens", "4",
                    "--threads", "2", "--n-ctx", "512", "--settle", "0", timeout=240, code=0)
    out = proc.stdout
    for path in ("routekit in-process (llama_cpp)", "llama_cpp.server via routekit",
                 "llama_cpp.server via the openai client"):
        assert path in out
    assert "TTFB vs server" in out and "1.00×" in out


def test_bench_needs_a_model_and_says_what_is_wrong(tmp_path: Path) -> None:
    proc = routekit("bench", code=2)
    assert "one of the arguments --model --package is required" in proc.stderr
    proc = routekit("bench", "--model", str(tmp_path / "missing.gguf"), code=1)
    assert "missing.gguf" in proc.stderr


def test_bench_refuses_bad_options_before_loading_anything(tmp_path: Path) -> None:
    # These used to pass argparse and fail after the model had loaded, with a traceback.
    model = str(tmp_path / "never-loaded.gguf")
    for args, said in ((["--settle", "-1"], "--settle: must be 0 to 60 seconds"),
                       (["--settle", "nan"], "--settle: must be 0 to 60 seconds"),
                       (["--settle", "1e9"], "--settle: must be 0 to 60 seconds"),
                       (["--n-gpu-layers", "-7"], "--n-gpu-layers: must be -1 (all) or more"),
                       (["--plot", str(tmp_path / "no-such" / "b.png")], "no such folder"),
                       (["--plot", str(tmp_path / "chart")], "ending in .png, .svg or .pdf"),
                       (["--plot", str(tmp_path)], "ending in .png, .svg or .pdf")):
        proc = routekit("bench", "--model", model, *args, code=2)
        assert said in proc.stderr, (args, proc.stderr)
