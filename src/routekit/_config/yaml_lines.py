"""YAML reading for the config loader: safe parsing, the YAML-bomb and duplicate-key checks,
and finding the YAML line that wrote a given value.

Paths here are raw tuples of mapping keys and list indexes, exactly as they appear in the
parsed data (``("models", "qwen", "price")``). This module knows nothing of the config schema:
``_loader.py`` turns raw paths into ``models["qwen"].price`` and decides which line to report.
It must never construct arbitrary Python objects: only the safe loader is used.
"""

from __future__ import annotations

import re
from typing import Any, Hashable, NamedTuple, Sequence

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .. import _constants as C
from .._exceptions import ConfigIssue

try:  # libyaml's parser is ~10x faster; the constructor stays PyYAML's safe one either way.
    from yaml import CSafeLoader as _SafeBase

    _C_PARSER = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    # The pure-Python loader has the same interface under another class: mypy sees a clash.
    from yaml import SafeLoader as _SafeBase  # type: ignore[assignment]

    _C_PARSER = False

__all__ = ["Ambiguous", "Duplicate", "YamlDocument", "YamlProblem", "dotted_path", "parse_yaml"]

RawPath = Sequence[Hashable]

_STR_TAG = "tag:yaml.org,2002:str"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(_SafeBase):
    """The safe loader, and nothing else: no Python object tags can be constructed."""


# YAML 1.1 (PyYAML) reads ``1e3`` and ``1.0e308`` as text: its floats need a dot and a signed
# exponent. Configs are validated strictly (text is not a number), so unquoted scalars in
# YAML 1.2's exponent form are numbers here too, as their writer meant. Quoted, they stay text.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


# YAML 1.1 (PyYAML) also reads a plain ``010`` as octal 8 (and ``08`` as text), and ``1:30``
# as 90 (base 60). Nobody writing a deadline, a price or a retry count means either, and
# reading ``010`` as 8 or as 10 would be a silent guess: :func:`_scan` finds them and the
# loader refuses them with their path and line. ``0``, ``0.5``, hex (``0x1F``) and binary
# (``0b101``) are unambiguous and stay numbers; quoted, any of them is text.
_LEADING_ZERO = re.compile(r"^[-+]?0[0-9_]+$")
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


def _ambiguity(node: Node) -> str | None:
    """Why a plain scalar is a number YAML 1.1 reads otherwise than it looks, or None."""
    if not isinstance(node, ScalarNode) or node.style:  # plain: None (PyYAML) or "" (libyaml)
        return None
    text = str(node.value)
    if _LEADING_ZERO.match(text):
        digits = text.lstrip("+-").replace("_", "")
        reading = (f"as octal ({text} is {int(digits, 8) * (-1 if text[0] == '-' else 1)})"
                   if set(digits) <= set("01234567") else "as text (octal has no 8 or 9)")
        return (f"the number {text} starts with a zero, which YAML 1.1 reads {reading}: write "
                "it without the leading zero, or in quotes to mean the text")
    if _BASE_60.match(text):
        return (f"{text} is a base-60 number to YAML 1.1: write the number itself, or put it "
                "in quotes to mean the text")
    return None


class Ambiguous(NamedTuple):
    """A plain scalar YAML 1.1 reads as another number than it looks (or as text)."""

    path: tuple[Hashable, ...]  # raw path to the value, or to the key when ``key``
    line: int
    message: str
    key: bool
    text: str  # as written


class YamlProblem(Exception):
    """The text cannot be read as one YAML mapping; ``issues`` says why."""

    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues


class Duplicate(NamedTuple):
    """A mapping key written twice. PyYAML keeps the last value silently; we refuse."""

    path: tuple[Hashable, ...]  # raw path to the repeated key
    line: int  # the later occurrence (1-based)
    first_line: int


class Found(NamedTuple):
    key_node: Node | None  # None for list items and for the root
    node: Node
    complete: bool  # False: the path stopped early; ``node`` is the deepest one that exists


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


class YamlDocument:
    """One parsed YAML config: the plain data, plus the node tree to answer "which line?".

    Mapping nodes are indexed lazily (a dict per mapping, built on the first lookup), so a
    large config pays for line lookups only where there are errors to report.
    """

    def __init__(self, root: MappingNode, data: Any, duplicates: list[Duplicate],
                 ambiguous: list[Ambiguous]) -> None:
        self.root = root
        self.data = data
        self.duplicates = duplicates
        self.ambiguous = ambiguous
        self._keys = _KeyReader()
        self._index: dict[int, dict[Hashable, tuple[Node, Node]]] = {}

    def find(self, path: RawPath) -> Found:
        key_node: Node | None = None
        node: Node = self.root
        for seg in path:
            if isinstance(node, MappingNode):
                pair = self._entries(node).get(seg)
                if pair is None:
                    return Found(key_node, node, False)
                key_node, node = pair
            elif isinstance(node, SequenceNode) and type(seg) is int and 0 <= seg < len(node.value):
                key_node, node = None, node.value[seg]
            else:
                return Found(key_node, node, False)
        return Found(key_node, node, True)

    def line_of(self, path: RawPath, *, key: bool = False) -> int:
        """The line to report for ``path``: its key's line when ``key`` (unknown fields,
        duplicate or bad names), else its value's line. A block mapping or list is reported
        at the line that names it, which is where a reader looks; a path that does not exist
        (a missing field) is reported at the deepest part that does."""
        found = self.find(path)
        if found.key_node is not None and (
            key
            or not found.complete
            or (isinstance(found.node, (MappingNode, SequenceNode)) and not found.node.flow_style)
        ):
            return _line(found.key_node)
        return _line(found.node)

    def scalar_text(self, path: RawPath, *, key: bool = False) -> str | None:
        """The text a scalar was written as (``yes``, ``3.10``), for quoting hints."""
        found = self.find(path)
        if not found.complete:
            return None
        node = found.key_node if key else found.node
        return node.value if isinstance(node, ScalarNode) else None

    def _entries(self, node: MappingNode) -> dict[Hashable, tuple[Node, Node]]:
        entries = self._index.get(id(node))
        if entries is not None:
            return entries
        merged: dict[Hashable, tuple[Node, Node]] = {}
        explicit: dict[Hashable, tuple[Node, Node]] = {}
        for k_node, v_node in node.value:
            if k_node.tag == _MERGE_TAG:
                sources = v_node.value if isinstance(v_node, SequenceNode) else [v_node]
                for src in sources:
                    if isinstance(src, MappingNode):
                        for k, pair in self._entries(src).items():
                            merged.setdefault(k, pair)
            else:
                explicit[self._keys.read(k_node)] = (k_node, v_node)
        entries = {**merged, **explicit}
        self._index[id(node)] = entries
        return entries


class _KeyReader:
    """Turns a key node into the key the constructed dict will hold (``1``, ``True``, ``'a'``)."""

    def __init__(self) -> None:
        self._constructor = SafeConstructor()

    def read(self, node: Node) -> Hashable:
        if isinstance(node, ScalarNode):
            if node.tag == _STR_TAG:
                return str(node.value)
            try:
                value: Hashable = self._constructor.construct_object(node, deep=True)
                hash(value)
                return value
            except (yaml.YAMLError, ValueError, TypeError):
                return str(node.value)
        return object()  # a list or mapping as a key: construction reports it, never equal


def dotted_path(path: RawPath) -> str:
    """A raw path as ``model_list[0].litellm_params.model`` (for files that are not routekit
    configs; the loader writes its own schema-aware paths)."""
    out = ""
    for seg in path:
        out += f"[{seg}]" if isinstance(seg, int) else (f".{seg}" if out else str(seg))
    return out


def parse_yaml(text: str) -> YamlDocument:
    """Parse ``text`` as a one-document YAML mapping. Raises ``YamlProblem`` when it is not
    YAML, not one mapping, or its aliases are recursive or expand past the bomb limit."""
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise YamlProblem([_marked_issue(exc)]) from None
        except yaml.reader.ReaderError as exc:
            raise YamlProblem([_reader_issue(exc, text)]) from None
        except RecursionError:
            raise YamlProblem([ConfigIssue("", "YAML nests too deeply")]) from None
        if root is None:
            raise YamlProblem([ConfigIssue("", _EMPTY)])
        if not isinstance(root, MappingNode):
            got = "a list" if isinstance(root, SequenceNode) else f"the value {root.value!r}"
            raise YamlProblem(
                [ConfigIssue("", f"the top level must be a mapping of sections, got {got}", _line(root))]
            )
        _check_expansion(root, C.MAX_YAML_EXPANDED_NODES)
        duplicates, ambiguous = _scan(root)
        try:
            data = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            raise YamlProblem([_marked_issue(exc)]) from None
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
            raise YamlProblem([ConfigIssue("", f"invalid YAML value: {exc}")]) from None
        return YamlDocument(root, data, duplicates, ambiguous)
    finally:
        loader.dispose()


_EMPTY = (
    "the config is empty; expected a mapping with 'fallback_chains' "
    "(and optionally 'providers', 'models', 'routing')"
)


def _marked_issue(exc: yaml.MarkedYAMLError) -> ConfigIssue:
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or exc.context or "cannot parse"
    line = int(mark.line) + 1 if mark is not None else None
    where = f" at column {int(mark.column) + 1}" if mark is not None else ""
    message = f"invalid YAML{where}: {problem}"
    if exc.context and exc.problem:
        ctx_mark = exc.context_mark
        ctx_line = f", line {int(ctx_mark.line) + 1}" if ctx_mark is not None else ""
        message += f" ({exc.context}{ctx_line})"
    return ConfigIssue("", message, line)


def _reader_issue(exc: yaml.reader.ReaderError, text: str) -> ConfigIssue:
    # libyaml reports a byte offset into the UTF-8 text; PyYAML a character offset.
    if _C_PARSER:
        line = text.encode("utf-8", "surrogatepass")[: exc.position].count(b"\n") + 1
    else:  # pragma: no cover
        line = text.count("\n", 0, exc.position) + 1
    char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
    return ConfigIssue("", f"invalid YAML: {exc.reason} (character {char})", line)


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: Node, limit: int) -> None:
    """Refuse alias graphs that would expand past ``limit`` nodes, or that loop.

    Aliases make the composed tree a DAG: each node's expanded size is memoised by identity,
    so the classic billion-laughs document costs a few dozen steps, not a billion.
    """
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        nid = id(node)
        if done:
            total = 1 + sum(sizes.get(id(c), 1) for c in _children(node))
            if total > limit:
                raise YamlProblem(
                    [ConfigIssue("", f"YAML aliases expand to more than {limit} nodes (a YAML bomb?)")]
                )
            sizes[nid] = total
            open_nodes.discard(nid)
            continue
        if nid in sizes:
            continue
        if nid in open_nodes:
            raise YamlProblem(
                [ConfigIssue("", "a YAML alias refers to a node that contains it (a recursive structure)", _line(node))]
            )
        open_nodes.add(nid)
        stack.append((node, True))
        for child in _children(node):
            if isinstance(child, (MappingNode, SequenceNode)) and id(child) not in sizes:
                stack.append((child, False))


def _scan(root: MappingNode) -> tuple[list[Duplicate], list[Ambiguous]]:
    """Every key written twice in one mapping, and every plain scalar YAML 1.1 reads as
    another number than it looks (each node visited once, aliases or not)."""
    keys = _KeyReader()
    found: list[Duplicate] = []
    ambiguous: list[Ambiguous] = []
    seen: set[int] = set()
    stack: list[tuple[Node, tuple[Hashable, ...]]] = [(root, ())]

    def check(node: Node, path: tuple[Hashable, ...], key: bool = False) -> None:
        why = _ambiguity(node)
        if why is not None:
            ambiguous.append(Ambiguous(path, _line(node), why, key, str(node.value)))

    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, MappingNode):
            first: dict[Hashable, Node] = {}
            for k_node, v_node in node.value:
                if k_node.tag == _MERGE_TAG:
                    stack.append((v_node, path))
                    continue
                key = keys.read(k_node)
                check(k_node, path + (key,), key=True)
                if key in first:
                    found.append(Duplicate(path + (key,), _line(k_node), _line(first[key])))
                else:
                    first[key] = k_node
                if isinstance(v_node, (MappingNode, SequenceNode)):
                    stack.append((v_node, path + (key,)))
                else:
                    check(v_node, path + (key,))
        elif isinstance(node, SequenceNode):
            for i, item in enumerate(node.value):
                if isinstance(item, (MappingNode, SequenceNode)):
                    stack.append((item, path + (i,)))
                else:
                    check(item, path + (i,))
    found.sort(key=lambda d: d.line)
    ambiguous.sort(key=lambda a: a.line)
    return found, ambiguous
