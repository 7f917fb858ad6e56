"""YAML as gptbench reads it (matrices, the host inventory): PyYAML's safe loader, with two
things YAML allows and a benchmark file never needs refused before anything is built:

- aliases that expand beyond MAX_NODES nodes, counted with every alias expanded where it is
  used (a 468-byte "billion laughs" file expands to 10^9 strings: refused at once, in
  bounded memory), and an alias that refers to itself;
- a key given twice in one mapping (YAML keeps the last silently: a run would train the
  spec of the second `specs:`), named with both lines.

Anchors and aliases within the bound still work, and so do merge keys (`<<: *base`, whose
keys the mapping may override). docs/matrix.md, "YAML".
"""

from __future__ import annotations

import yaml

from gptspec.errors import GptbenchError
from gptspec.limits import cut, quote

# nodes of one document with every alias expanded: matrices/pool.yaml has 168; a matrix
# of this many values is far beyond any real one, and still small to validate
MAX_NODES = 10_000
_MERGE = "tag:yaml.org,2002:merge"


def load(text: str, source: str):
    """The Python value of one YAML document; GptbenchError naming `source` and the line
    for invalid YAML, a key given twice, or aliases beyond MAX_NODES."""
    loader = yaml.SafeLoader(text)
    loader.name = source  # PyYAML's own messages name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check(node, loader, source)  # on the nodes as written, before a value is built
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise GptbenchError(f"{source} is not valid YAML: {_bounded(e)}") from None
    except RecursionError:
        raise GptbenchError(f"{source} nests too deep to be a gptbench file (a mapping of lists and "
                            "mappings a few levels deep).") from None
    finally:
        loader.dispose()


def _check(root, loader, source: str) -> None:
    """Each mapping's keys once, and the number of nodes `root` stands for with every alias
    expanded, each distinct node visited once (memoised): the check costs the file's size,
    not the expansion's."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            raise GptbenchError(f"{source} line {node.start_mark.line + 1}: an alias refers to the node that "
                                "holds it, which would expand forever; write the value out.")
        busy.add(key)
        if isinstance(node, yaml.SequenceNode):
            n = 1 + sum(size(child) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            _unique_keys(node, loader, source)
            n = 1 + sum(size(k) + size(v) for k, v in node.value)
        else:
            n = 1
        busy.discard(key)
        if n > MAX_NODES:
            raise GptbenchError(f"{source} line {node.start_mark.line + 1}: its aliases expand to more than "
                                f"{MAX_NODES:,} values (an alias counts as a copy of its anchor at every use); "
                                "a gptbench file needs nothing that large. Write the values out, or use fewer "
                                "aliases.")
        sizes[key] = n
        return n

    size(root)


def _unique_keys(node, loader, source: str) -> None:
    first: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE or not isinstance(key_node, yaml.ScalarNode):
            continue  # a merge's keys may be overridden by the mapping's own: YAML's meaning
        key = loader.construct_object(key_node)  # as YAML resolves it: `1` and `01` are one int
        line = key_node.start_mark.line + 1
        try:
            if key in first:
                raise GptbenchError(f"{source} line {line}: key {quote(key)} is given twice in one mapping (first "
                                    f"on line {first[key]}); YAML would keep only the last silently. Remove one.")
            first[key] = line
        except TypeError:
            continue  # unhashable: the constructor says so itself


def _bounded(e: Exception) -> str:
    """PyYAML's message (its context and a snippet of the line), within 1,000 characters."""
    return cut(str(e), 1000)
