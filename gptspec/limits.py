"""Every upper bound on what a user can ask of gptbench, and the memory this machine has to
give (README, "Bad input"; docs/spec.md, "Limits").

A bound is checked before anything is allocated, so a typo (three extra zeros) or a hostile
file is a one-paragraph error, never a machine brought down. The spec's bounds are
structural (generous for a GPT-2 XL: V 50257, T 1024, 48 layers, 25 heads, C 1600); what
a spec within them needs is then weighed against the memory available here (fits).
"""

from __future__ import annotations

import stat
from pathlib import Path

from gptspec.errors import GptbenchError

# a spec's fields: at most these (a GPT-2 XL is far inside; its vocab or block x1000 is not)
SPEC_MAX = {"vocab_size": 2**20, "block_size": 2**17, "n_layer": 1024, "n_head": 1024, "n_embd": 2**16}
# a spec given as a .json file: a JSON object of a few fields
MAX_SPEC_FILE = 2**20
# `gptbench generate --max-new-tokens` and the generate workload's max_new_tokens
MAX_NEW_TOKENS = 100_000
# a safetensors header (its JSON: tensor names, shapes, offsets, metadata); gpt2-124m's is 15 KB
MAX_SAFETENSORS_HEADER = 16 * 2**20
# reading a safetensors file holds about this many times its tensors' bytes at the peak
# (the file's bytes, then the arrays made from them; measured: docs/spec.md, "Limits")
SAFETENSORS_READ_FACTOR = 2
# a text corpus in memory: its bytes, the str (up to 4 bytes per character) and int64 ids
CORPUS_BYTES_FACTOR = 13
# quoted values in error messages: at most this many characters of one value
QUOTE_CHARS = 200


class TooBig(GptbenchError):
    """What was asked for needs more memory than this machine has available."""


def available_bytes() -> int:
    """Memory this process may still take: the kernel's MemAvailable, or less under a cgroup
    limit (a container's memory.max minus what the cgroup already uses)."""
    import psutil

    free = psutil.virtual_memory().available
    cgroup = _cgroup_room()
    return min(free, cgroup) if cgroup is not None else free


def _cgroup_room() -> int | None:
    try:
        rel = Path("/proc/self/cgroup").read_text().strip().split("\n")[0].split("::", 1)[1]
        folder = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return max(0, int(limit) - int((folder / "memory.current").read_text()))
    except (OSError, IndexError, ValueError):  # cgroup v1, no cgroup namespace, not Linux
        return None


def fits(need_bytes: float, what: str, advice: str) -> None:
    """TooBig naming `what`, the estimate and the limit, unless need_bytes fits in the
    memory available here."""
    limit = available_bytes()
    if need_bytes > limit:
        raise TooBig(f"{what} needs an estimated {mb(need_bytes)} of memory, more than the {mb(limit)} available "
                     f"here; nothing was allocated. {advice}")


def not_a_file(path) -> str | None:
    """None for a regular file; else what the path is, as the end of "FILE ...": a path that
    does not exist, a folder, or something with no end (/dev/zero) or no writer (a FIFO) that
    must never be read. stat() only: it opens nothing, so a FIFO cannot block it."""
    try:
        mode = Path(path).stat().st_mode
    except FileNotFoundError:
        return "does not exist"
    except OSError as e:
        return f"cannot be looked at ({e.strerror or e})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a folder"
    for test, what in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO (a named pipe)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return f"is {what}, not a regular file"
    return "is not a regular file"


def mb(nbytes: float) -> str:
    return f"{nbytes / 2**20:,.0f} MB" if nbytes < 10 * 2**30 else f"{nbytes / 2**30:,.1f} GB"


def quote(value, limit: int = QUOTE_CHARS) -> str:
    """repr(value), cut to `limit` characters with the length it had: an error message quotes
    what it refuses, never megabytes of it."""
    return cut(repr(value), limit)


def cut(text: str, limit: int) -> str:
    """text, cut to `limit` characters with the length it had."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters in all)"
