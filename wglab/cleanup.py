"""Find and remove what labs left behind: namespaces, wireguard-go
processes and sockets, root-namespace helpers (prometheus, forwarders) and
work directories.

Usage: python -m wglab.cleanup [--all] [--lab-id ID] [--dry-run]

Every lab registers itself in /run/wglab/ID.json with the pid of the Python
process that owns it. By default only labs whose owner is gone are removed,
so running cleanup never breaks a lab another developer is using; --lab-id
removes one lab regardless, --all removes every lab.

Everything a lab creates is named with its prefix `wgl` + 4 hex digits
(namespaces `wglID-...`, interfaces `wglID...`), which is how leftovers are
found even when the registry entry is missing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from wglab.netns import delete_netns, list_netns
from wglab.processes import kill_pid, pid_alive, run
from wglab.wireguard import WG_SOCKET_DIR

REGISTRY_DIR = Path("/run/wglab")
LAB_ID_RE = re.compile(r"^[0-9a-f]{4}$")
NAME_RE = re.compile(r"^wgl([0-9a-f]{4})")


def prefix_for(lab_id: str) -> str:
    """Given a lab id, return the prefix of all its names."""
    return f"wgl{lab_id}"


@dataclass
class LabRecord:
    """What cleanup knows about one lab."""

    lab_id: str
    owner_pid: int | None = None
    workdir: Path | None = None
    namespaces: list[str] = field(default_factory=list)
    sockets: list[Path] = field(default_factory=list)

    def owner_alive(self) -> bool:
        """Given a record, return whether the lab's owner still runs."""
        return self.owner_pid is not None and pid_alive(self.owner_pid)


def register(lab_id: str, owner_pid: int, workdir: Path) -> Path:
    """Given a lab id, its owner pid and work dir, record them for cleanup
    and return the registry file."""
    REGISTRY_DIR.mkdir(parents=True, exist_ok=True)
    path = REGISTRY_DIR / f"{lab_id}.json"
    path.write_text(json.dumps({"lab_id": lab_id, "owner_pid": owner_pid, "workdir": str(workdir)}))
    return path


def find_labs() -> dict[str, LabRecord]:
    """Given the system's current state, return every lab found, by id."""
    labs: dict[str, LabRecord] = {}
    if REGISTRY_DIR.is_dir():
        for path in REGISTRY_DIR.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                rec = LabRecord(data["lab_id"], int(data["owner_pid"]), Path(data["workdir"]))
            except (OSError, ValueError, KeyError, TypeError):
                rec = LabRecord(path.stem)
            if LAB_ID_RE.match(rec.lab_id):
                labs[rec.lab_id] = rec
    for ns in list_netns("wgl"):
        match = NAME_RE.match(ns)
        if match:
            labs.setdefault(match.group(1), LabRecord(match.group(1))).namespaces.append(ns)
    if WG_SOCKET_DIR.is_dir():
        for sock in WG_SOCKET_DIR.glob("wgl*.sock"):
            match = NAME_RE.match(sock.name)
            if match:
                labs.setdefault(match.group(1), LabRecord(match.group(1))).sockets.append(sock)
    return labs


def _cmdline(pid: int) -> list[str]:
    """Given a pid, return its argv ([] if it is gone or unreadable)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def lab_pids(lab_id: str, workdir: Path | None) -> list[int]:
    """Given a lab id and work dir, return pids of processes that belong to
    the lab by their argv: wireguard-go for the lab's interfaces, and helpers
    whose arguments name the lab's namespaces or work dir."""
    prefix = prefix_for(lab_id)
    me = os.getpid()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        argv = _cmdline(int(entry.name))
        if not argv:
            continue
        hit = any(arg.startswith(prefix) for arg in argv)
        if workdir is not None and not hit:
            hit = any(str(workdir) in arg for arg in argv)
        if hit:
            found.append(int(entry.name))
    return found


def mounts_under(directory: Path) -> list[Path]:
    """Given a directory, return the mount points at or below it, deepest
    first (the order to unmount them in)."""
    found = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        # Spaces in mount points are written as \040.
        target = Path(line.split()[1].replace("\\040", " "))
        if target == directory or directory in target.parents:
            found.append(target)
    return sorted(found, key=lambda path: len(path.parts), reverse=True)


def cleanup_lab(record: LabRecord, dry_run: bool = False) -> list[str]:
    """Given a lab record, remove everything of that lab and return a list
    of what was (or, with dry_run, would be) removed."""
    done: list[str] = []
    prefix = prefix_for(record.lab_id)
    # Processes first: a process alive inside a deleted namespace keeps it
    # (and its interfaces) alive, out of sight of list_netns.
    for pid in lab_pids(record.lab_id, record.workdir):
        done.append(f"process {pid}: {' '.join(_cmdline(pid))[:100]}")
        if not dry_run:
            kill_pid(pid)
    for ns in list_netns(prefix + "-"):
        done.append(f"namespace {ns}")
        if not dry_run:
            delete_netns(ns)
    if WG_SOCKET_DIR.is_dir():
        for sock in WG_SOCKET_DIR.glob(f"{prefix}*.sock"):
            done.append(f"socket {sock}")
            if not dry_run:
                sock.unlink(missing_ok=True)
    if record.workdir is not None and record.workdir.exists():
        # A container's overlay of `/` may still be mounted in the work dir:
        # removing the tree through it would walk the whole file system.
        for mountpoint in mounts_under(record.workdir):
            done.append(f"mount {mountpoint}")
            if not dry_run and run(["umount", str(mountpoint)], check=False).returncode != 0:
                run(["umount", "--lazy", str(mountpoint)], check=False)
        done.append(f"workdir {record.workdir}")
        if not dry_run and not mounts_under(record.workdir):
            shutil.rmtree(record.workdir, ignore_errors=True)
    reg = REGISTRY_DIR / f"{record.lab_id}.json"
    if reg.exists():
        done.append(f"registry {reg}")
        if not dry_run:
            reg.unlink(missing_ok=True)
    return done


def main(argv: list[str] | None = None) -> int:
    """Given command-line arguments, clean up labs and return the exit code
    (0, or 1 when something could not be removed)."""
    parser = argparse.ArgumentParser(prog="python -m wglab.cleanup", description=__doc__.split("\n\n")[0])
    parser.add_argument("--all", action="store_true", help="also remove labs whose owner is still running")
    parser.add_argument("--lab-id", help="remove this lab only (4 hex digits), even if its owner runs")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed")
    args = parser.parse_args(argv)
    labs = find_labs()
    if args.lab_id:
        labs = {args.lab_id: labs.get(args.lab_id, LabRecord(args.lab_id))}
    for lab_id, record in sorted(labs.items()):
        if record.owner_alive() and not (args.all or args.lab_id):
            print(f"lab {lab_id}: in use by pid {record.owner_pid}, kept (use --lab-id {lab_id} or --all)")
            continue
        for item in cleanup_lab(record, dry_run=args.dry_run):
            print(f"lab {lab_id}: {'would remove' if args.dry_run else 'removed'} {item}")
    if args.dry_run:
        return 0
    remaining = find_labs()
    leftover = [i for i in labs if i in remaining and (remaining[i].namespaces or remaining[i].sockets)]
    leftover = [i for i in leftover if not (labs[i].owner_alive() and not (args.all or args.lab_id))]
    if leftover:
        print(f"could not fully remove labs: {', '.join(leftover)}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
