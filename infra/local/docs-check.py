#!/usr/bin/env python3
"""Runs the walkthroughs in the docs as written, against the running stack.

Every ```sh block of a page, in page order, in one bash process per page
(so a variable one block sets is there for the next, as in the reader's
terminal), from the repository's root, with a clean environment: a page
sets up what it uses, or it fails here.

What a block must print is written in the block itself, as comments that
read well on the page:

    curl -s ... | python3 -m json.tool
    # → "lifecycle": "legacy"

Each `# → text` line names a piece of text the block's output must
contain (after trailing spaces are stripped). A block also fails when its
last command does. A block that must not run here (it starts the stack,
or takes minutes) is marked just before its fence, invisibly on the page:

    <!-- docs-check: skip (make chaos takes half an hour; its figures are below) -->

Usage: docs-check.py [PAGE.md ...]   (default: README.md, docs/tutorials,
docs/patterns). Writes target/docs-check/report.json; exits 1 on a failure
or when no block ran, 2 when the stack is not up on the default ports.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# A fence may be indented (a block inside a list item); its body is
# dedented by as much.
FENCE = re.compile(r"^(\s*)```(sh|bash)\s*$")
SKIP = re.compile(r"^<!--\s*docs-check:\s*skip\b\s*(.*?)\s*-->\s*$")
EXPECT = re.compile(r"^\s*#\s*→\s?(.*)$")
try:
    PAGE_TIMEOUT = int(os.environ.get("DOCS_CHECK_PAGE_SECONDS", "600"))
except ValueError:
    sys.exit("docs-check: DOCS_CHECK_PAGE_SECONDS must be a whole number of seconds")
MARK = "@@docs-check@@"


@dataclass
class Block:
    line: int
    code: str
    skip: str | None
    expects: list[str] = field(default_factory=list)


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        if fence := FENCE.match(lines[i]):
            indent = len(fence.group(1))
            start = i
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                line = lines[i]
                body.append(line[indent:] if line[:indent].isspace() else line.lstrip())
                i += 1
            skip = None
            before = start - 1
            while before >= 0 and not lines[before].strip():
                before -= 1
            if before >= 0 and (m := SKIP.match(lines[before].strip())):
                skip = m.group(1) or "marked"
            expects = [m.group(1).strip() for l in body if (m := EXPECT.match(l))]
            found.append(Block(start + 1, "\n".join(body), skip, [e for e in expects if e]))
        i += 1
    return found


def script(runnable: list[Block]) -> str:
    # As in the reader's terminal: no `set -e`, no `pipefail`.
    parts = ["cd " + sh_quote(str(ROOT))]
    for n, block in enumerate(runnable):
        parts.append(f"printf '\\n{MARK} start {n}\\n'")
        parts.append("{\n" + block.code + "\n}")
        parts.append(f"printf '\\n{MARK} end {n} %s\\n' \"$?\"")
    return "\n".join(parts) + "\n"


def sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def run_page(page: Path) -> dict:
    all_blocks = blocks(page)
    runnable = [b for b in all_blocks if b.skip is None]
    result = {
        "page": str(page.relative_to(ROOT)),
        "blocks": len(all_blocks),
        "skipped": [{"line": b.line, "why": b.skip} for b in all_blocks if b.skip],
        "failures": [],
        "seconds": 0.0,
    }
    if not runnable:
        return result
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
    }
    for name in ("CARGO_TARGET_DIR", "CARGO_HOME", "RUSTUP_HOME"):
        if name in os.environ:
            env[name] = os.environ[name]
    started = time.monotonic()
    # From a file, with no input: a command that reads standard input
    # would otherwise eat the blocks after it.
    out = ROOT / "target" / "docs-check"
    out.mkdir(parents=True, exist_ok=True)
    runner = out / (page.stem + ".sh")
    runner.write_text(script(runnable), encoding="utf-8")
    # Into a file, not a pipe: something a block left in the background
    # (a stand-in) may hold its output open long after the page ended.
    captured = out / (page.stem + ".out")
    with captured.open("wb") as sink:
        process = subprocess.Popen(
            ["bash", "--noprofile", "--norc", str(runner)],
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )
        try:
            process.wait(timeout=PAGE_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            result["failures"].append({"line": 0, "why": f"the page ran over {PAGE_TIMEOUT} s"})
        finally:
            # Whatever a block left running in the background.
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
    output = captured.read_text(encoding="utf-8", errors="replace")
    result["seconds"] = round(time.monotonic() - started, 1)
    outputs = split(output)
    for n, block in enumerate(runnable):
        got = outputs.get(n)
        if got is None:
            result["failures"].append({"line": block.line, "why": "did not run (an earlier block stopped the page)"})
            continue
        text, rc = got
        lines = "\n".join(l.rstrip() for l in text.splitlines())
        missing = [e for e in block.expects if e not in lines]
        if rc != 0 or missing:
            why = []
            if rc != 0:
                why.append(f"exit status {rc}")
            why += [f"no {e!r} in the output" for e in missing]
            result["failures"].append({"line": block.line, "why": "; ".join(why), "output": text[-2000:]})
    return result


def split(output: str) -> dict[int, tuple[str, int]]:
    found: dict[int, tuple[str, int]] = {}
    current: int | None = None
    text: list[str] = []
    for line in output.splitlines():
        if line.startswith(MARK):
            words = line.split()
            if words[1] == "start":
                current, text = int(words[2]), []
            elif words[1] == "end" and current is not None:
                found[current] = ("\n".join(text), int(words[3]))
                current = None
        elif current is not None:
            text.append(line)
    return found


def pages(arguments: list[str]) -> list[Path]:
    if arguments:
        return [Path(a).resolve() for a in arguments]
    chosen = [ROOT / "README.md"]
    for folder in ("docs/tutorials", "docs/patterns"):
        chosen += sorted((ROOT / folder).glob("*.md"))
    return [p for p in chosen if blocks(p)]


def stack_problem() -> str | None:
    """Why the walkthroughs cannot run here, if they cannot: they name the
    default ports, and need the stack up."""
    ports = ROOT / ".run" / "ports.env"
    if ports.exists():
        m = re.search(r"^KIT_PORT_OFFSET=(\d+)$", ports.read_text(), re.M)
        if m and m.group(1) != "0":
            return (f"this clone's stack runs with KIT_PORT_OFFSET={m.group(1)}; the walkthroughs "
                    "name the default ports (8000, 8001, ...): make down, then make up without an offset")
    try:
        urllib.request.urlopen("http://127.0.0.1:8001/health/ready", timeout=5).close()
    except (urllib.error.URLError, OSError) as error:
        return f"the strangler's admin port 8001 does not answer ({error}): run make up first"
    return None


def main() -> int:
    problem = stack_problem()
    if problem:
        print(f"docs-check: {problem}", file=sys.stderr)
        return 2
    results = []
    for page in pages(sys.argv[1:]):
        result = run_page(page)
        results.append(result)
        ran = result["blocks"] - len(result["skipped"])
        state = "ok" if not result["failures"] else "FAILED"
        print(f"{state:6} {result['page']}: {ran} run, {len(result['skipped'])} skipped, {result['seconds']} s", flush=True)
        for failure in result["failures"]:
            print(f"       line {failure['line']}: {failure['why']}")
            if failure.get("output"):
                for line in failure["output"].splitlines()[-15:]:
                    print(f"       | {line}")
    out = ROOT / "target" / "docs-check"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    failed = sum(1 for r in results if r["failures"])
    total = sum(r["seconds"] for r in results)
    ran = sum(r["blocks"] - len(r["skipped"]) for r in results)
    print(f"\n{len(results) - failed}/{len(results)} pages pass ({ran} blocks run) in {total:.0f} s; report in target/docs-check/report.json")
    if ran == 0:
        print("docs-check: no block ran: the pages moved, or the ones named have no sh block", file=sys.stderr)
        return 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
