"""The processes a test started, read from Linux's /proc: for tests that check nothing was
left running (no orphans) after a component that starts processes of its own stops."""
from __future__ import annotations

from pathlib import Path

PROC = Path("/proc")


def children(pid: int) -> dict[int, list[str]]:
    """The live (not zombie) child processes of ``pid``: pid -> argv."""
    found: dict[int, list[str]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # stat: "pid (comm) state ppid ...", comm may hold spaces and parentheses
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:  # it ended while we looked
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry.name)] = [a.decode(errors="replace") for a in argv if a]
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
