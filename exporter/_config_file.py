"""Read an operator's YAML file with bounds: size, UTF-8, depth, aliases, duplicate keys.

Shared by ``--config.file`` and ``--web.config.file``. A file that breaks a bound is one
:class:`~exporter.errors.ConfigError` line naming the file and a line number, never a
traceback and never a value from the file:

* at most :data:`MAX_BYTES` are read (``/dev/zero`` is refused, not read to the end);
* the text must be UTF-8;
* nesting is limited to :data:`MAX_DEPTH` levels, checked while composing (PyYAML's composer
  recurses, so 20,000 nested brackets would otherwise end in a ``RecursionError``);
* aliases are fine, but the document they expand to may hold at most :data:`MAX_NODES`
  nodes and :data:`MAX_DEPTH` levels, computed once per node (everything downstream, from
  the merge of deployment defaults to validation, walks the expanded tree); a recursive
  alias is refused;
* a key given twice in one mapping is refused (YAML leaves it to the loader; PyYAML keeps the
  last one silently), while ``<<`` merge keys keep their meaning;
* an integer is at most :data:`MAX_DIGITS` digits long.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from exporter.errors import ConfigError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_DIGITS",
    "MAX_NODES",
    "MAX_SECRET_BYTES",
    "read_secret_file",
    "read_yaml",
    "readable_by_all",
]

#: Largest file read, in bytes.
MAX_BYTES: Final = 256 * 1024
#: Deepest nesting of mappings and lists, aliases expanded.
MAX_DEPTH: Final = 64
#: Most nodes the document may expand to through its aliases (256 KiB of YAML holds far fewer).
MAX_NODES: Final = 1_000_000
#: Longest integer, in characters.
MAX_DIGITS: Final = 64
#: Largest secret file read (``*_FILE`` variables), in bytes.
MAX_SECRET_BYTES: Final = 64 * 1024
_MERGE_TAG: Final = "tag:yaml.org,2002:merge"


class _Refused(yaml.YAMLError):
    """A bound of this module was broken at ``line`` (1-based)."""

    def __init__(self, reason: str, line: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def read_yaml(path: str | Path, label: str, *, unreadable: str | None = None) -> Any:
    """Return the YAML document in ``path`` (``None`` when it is empty).

    Args:
        path: The file.
        label: How errors about the content name the file.
        unreadable: How an error opening or reading it names the file (default ``label``).

    Raises:
        ConfigError: the file cannot be read, breaks a bound or is not valid YAML.
    """
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(unreadable or label, f"cannot read the file ({exc.strerror})") from None
    where = label
    if len(data) > MAX_BYTES:
        raise ConfigError(where, f"larger than {MAX_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"not UTF-8 text (byte {exc.start})") from None
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except _Refused as exc:
        raise ConfigError(where, f"{exc.reason} at line {exc.line}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(where, f"not valid YAML{at}") from None
    finally:
        loader.dispose()


def read_secret_file(path: str, label: str) -> str:
    """Return the secret held by the file at ``path``, without surrounding whitespace.

    Args:
        path: The file (a mounted Docker or Kubernetes secret, typically).
        label: The ``X_FILE`` variable that named it; errors name it, never the content.

    Raises:
        ConfigError: the file cannot be read, is larger than :data:`MAX_SECRET_BYTES`, is
            not UTF-8 or holds nothing.
    """
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(MAX_SECRET_BYTES + 1)
    except OSError as exc:
        raise ConfigError(label, f"cannot read the file ({exc.strerror})") from None
    if len(data) > MAX_SECRET_BYTES:
        raise ConfigError(label, f"the file is larger than {MAX_SECRET_BYTES // 1024} KiB")
    try:
        # The trailing newline an editor or `echo` leaves is not part of the secret.
        text = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(label, "the file is not UTF-8 text") from None
    if not text:
        raise ConfigError(label, "the file is empty")
    return text


def readable_by_all(path: str) -> bool:
    """Tell whether every user of the machine may read the file at ``path``."""
    try:
        return bool(Path(path).stat().st_mode & 0o004)
    except OSError:
        return False  # the loader reports an unreadable file


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with the bounds of this module."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        """Compose one node, refusing to nest deeper than :data:`MAX_DEPTH`."""
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _Refused(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def compose_document(self) -> Node | None:
        """Compose the document, then check what its aliases expand to."""
        node = super().compose_document()
        if node is not None:
            _check_expansion(node)
        return node

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        """Build a mapping, refusing a key given twice (``<<`` merges excepted)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: PyYAML's own check reports it
            if duplicate:
                # Never the key itself: a URL pasted as a key is still a credential.
                raise _Refused("duplicate key", key_node.start_mark.line + 1)
            seen.add(key)
        return dict(super().construct_mapping(node, deep=deep))

    def construct_yaml_int(self, node: ScalarNode) -> int:
        """Build an integer of at most :data:`MAX_DIGITS` characters."""
        if len(str(node.value)) > MAX_DIGITS:
            line = node.start_mark.line + 1
            raise _Refused(f"a number too long (over {MAX_DIGITS} digits)", line)
        return super().construct_yaml_int(node)


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)


def _check_expansion(root: Node) -> None:
    """Refuse a document whose aliases expand past :data:`MAX_NODES` or :data:`MAX_DEPTH`.

    Sizes and depths are computed once per node, bottom-up without recursion, so a bomb is
    measured in the time of its compact form.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded nodes, depth)
    stack: list[tuple[Node, bool]] = [(root, False)]
    open_nodes: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        if id(node) in measured:
            continue
        children = _children(node)
        if not children_done:
            if id(node) in open_nodes:
                raise _Refused("an alias that refers to itself", node.start_mark.line + 1)
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in children if id(child) not in measured)
            continue
        open_nodes.discard(id(node))
        size = 1 + sum(measured[id(child)][0] for child in children)
        depth = 1 + max((measured[id(child)][1] for child in children), default=0)
        if size > MAX_NODES or depth > MAX_DEPTH:
            reason = f"aliases expanding past {MAX_NODES} nodes or {MAX_DEPTH} levels"
            raise _Refused(reason, node.start_mark.line + 1)
        measured[id(node)] = (size, depth)


def _children(node: Node) -> list[Node]:
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        return [part for pair in node.value for part in pair]
    return []
