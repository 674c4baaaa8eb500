#!/usr/bin/env python3
"""Guard rails of scriptbox's architecture (issue 12, point 7), checked on the source tree.

Fails (exit 1), printing each finding, on:
  - a non-test function of more than 100 lines (`long-fn`);
  - an import cycle between top-level modules of src/ (`cycle`), of any length;
  - an `"aws:` string outside src/runbook/actions/ and test code (`action-name`): an action's
    name is compared in one place only;
  - `bollard` outside src/sandbox/ (`bollard`): the Docker client stays behind the backend.

`--report` prints every finding and the counts, and always exits 0 (for a tree that is not
there yet). Informational counts (never failing): non-test functions returning a
`Result<_, String>` (at any depth: a future's too) and numeric `as` casts.

Test code is `#[cfg(test)]` modules, `#[test]` functions and files named `tests.rs` or
`*_tests.rs`. The parsing is lexical (comments and string literals are understood, braces are
counted), which is enough for rustfmt-formatted code.

Usage: scripts/arch-check.py [--report] [SRC_DIR]   (default: src)
"""

import collections
import os
import re
import sys

MAX_FN_LINES = 100

FN_RE = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:default\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)"
)
CAST_RE = re.compile(
    r"\bas\s+(?:u8|u16|u32|u64|u128|usize|i8|i16|i32|i64|i128|isize|f32|f64)\b"
)
RESULT_RE = re.compile(r"\bResult\s*<")


def generic_args(text, start):
    """The top-level arguments of the `<...>` opening at `text[start]`, and the index past its
    `>`; `->` (a nested fn type's arrow) is not a bracket."""
    depth, args, cur, i = 0, [], [], start
    while i < len(text):
        c = text[i]
        if text.startswith("->", i):
            cur.append("->")
            i += 2
            continue
        if c in "<([":
            depth += 1
            if depth == 1:
                i += 1
                continue
        elif c in ">)]":
            depth -= 1
            if depth == 0:
                args.append("".join(cur).strip())
                return args, i + 1
        elif c == "," and depth == 1:
            args.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    return args, i


def result_string_returns(skel):
    """How many return types (`-> T`, up to the body, `;` or `where`) hold a `Result` whose
    error type is `String`, at any depth (`BoxFuture<'_, Result<T, String>>` too)."""
    count, seen_to = 0, 0
    for m in re.finditer(r"->", skel):
        if m.start() < seen_to:
            continue  # the arrow of a fn type inside a return type already read
        end = len(skel)
        for stop in (re.compile(r"[{;]"), re.compile(r"\bwhere\b")):
            hit = stop.search(skel, m.end())
            if hit:
                end = min(end, hit.start())
        ret, seen_to = skel[m.end() : end], end
        for r in RESULT_RE.finditer(ret):
            args, _ = generic_args(ret, r.end() - 1)
            if len(args) == 2 and re.fullmatch(r"(?:std::string::)?String", args[1]):
                count += 1
                break
    return count


def lex(text):
    """Returns (code, skeleton): `code` is the text with comments blanked (strings kept);
    `skeleton` also has string and char literals blanked. Both keep every newline, so line
    numbers hold."""
    code, skel = [], []
    i, n = 0, len(text)

    def put(c_code, c_skel):
        code.append(c_code)
        skel.append(c_skel)

    while i < n:
        c = text[i]
        nxt = text[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            while i < n and text[i] != "\n":
                put(" ", " ")
                i += 1
            continue
        if c == "/" and nxt == "*":
            depth = 0
            while i < n:
                if text.startswith("/*", i):
                    depth += 1
                    put("  ", "  ")
                    i += 2
                elif text.startswith("*/", i):
                    depth -= 1
                    put("  ", "  ")
                    i += 2
                    if depth == 0:
                        break
                else:
                    ch = "\n" if text[i] == "\n" else " "
                    put(ch, ch)
                    i += 1
            continue
        m = re.match(r'b?r(#*)"', text[i:])
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            end = text.find('"' + m.group(1), i + len(m.group(0)))
            end = n if end < 0 else end + 1 + len(m.group(1))
            lit = text[i:end]
            put(lit, re.sub(r"[^\n]", " ", lit))
            i = end
            continue
        if c == '"' or (c == "b" and nxt == '"' and (i == 0 or not text[i - 1].isalnum())):
            j = i + (2 if c == "b" else 1)
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            lit = text[i : j + 1]
            put(lit, re.sub(r"[^\n]", " ", lit))
            i = j + 1
            continue
        if c == "'":
            m = re.match(r"'(\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'\n])'", text[i:])
            if m:
                lit = m.group(0)
                put(lit, " " * len(lit))
                i += len(lit)
                continue
        put(c, c)
        i += 1
    return "".join(code), "".join(skel)


def block_end(skel_lines, start):
    """The last line (index) of the brace block that opens at or after line `start`, or None
    when a `;` comes first (a declaration without a body)."""
    depth, opened = 0, False
    for j in range(start, len(skel_lines)):
        for ch in skel_lines[j]:
            if ch == "{":
                depth += 1
                opened = True
            elif ch == "}":
                depth -= 1
                if opened and depth == 0:
                    return j
            elif ch == ";" and not opened:
                return None
    return None


def test_lines(path, skel_lines):
    """The set of line indexes that are test code."""
    base = os.path.basename(path)
    if base == "tests.rs" or base.endswith("_tests.rs"):
        return set(range(len(skel_lines)))
    out = set()
    pending = False
    for i, line in enumerate(skel_lines):
        stripped = line.strip()
        if re.match(r"#\[(cfg\(test\)|test|tokio::test(\(.*\))?)\]", stripped):
            pending = True
            continue
        if pending and stripped.startswith("#["):
            continue
        if pending and stripped:
            pending = False
            end = block_end(skel_lines, i)
            if end is not None:
                out.update(range(i, end + 1))
            else:
                out.add(i)
    return out


class File:
    def __init__(self, root, path):
        self.path = path
        self.rel = os.path.relpath(path, os.path.dirname(os.path.abspath(root)) or ".")
        text = open(path, encoding="utf-8").read()
        code, skel = lex(text)
        self.code_lines = code.split("\n")
        self.skel_lines = skel.split("\n")
        self.tests = test_lines(path, self.skel_lines)

    def non_test(self, lines):
        return [(i, l) for i, l in enumerate(lines) if i not in self.tests]


def rust_files(root):
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith(".rs"):
                yield os.path.join(d, f)


def top_module(root, path):
    rel = os.path.relpath(path, root)
    first = rel.split(os.sep)[0]
    if first in ("lib.rs", "main.rs"):
        return None
    return first[:-3] if first.endswith(".rs") else first


def crate_refs(code):
    """Top-level module names a file's code names through `crate::` (nested groups too)."""
    names = set(re.findall(r"\bcrate::(\w+)", code))
    for m in re.finditer(r"\bcrate::\{", code):
        depth, j, start = 1, m.end(), m.end()
        while j < len(code) and depth:
            depth += {"{": 1, "}": -1}.get(code[j], 0)
            j += 1
        group = code[start : j - 1]
        depth, item = 0, ""
        for ch in group + ",":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            if ch == "," and depth == 0:
                first = re.match(r"\s*(\w+)", item)
                if first:
                    names.add(first.group(1))
                item = ""
            else:
                item += ch
    return names


def cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root):
    findings = collections.defaultdict(list)
    info = collections.Counter()
    files = [File(root, p) for p in rust_files(root)]
    modules = {top_module(root, f.path) for f in files} - {None}
    graph = collections.defaultdict(set)
    edges = collections.defaultdict(set)
    for f in files:
        rel_in_src = os.path.relpath(f.path, root).replace(os.sep, "/")
        # Long functions.
        for i, line in f.non_test(f.skel_lines):
            m = FN_RE.match(line)
            if not m:
                continue
            end = block_end(f.skel_lines, i)
            if end is not None and end - i + 1 > MAX_FN_LINES:
                findings["long-fn"].append(
                    f"{f.rel}:{i + 1}: fn {m.group(1)} is {end - i + 1} lines (at most {MAX_FN_LINES})"
                )
        code = "\n".join(l for _, l in f.non_test(f.code_lines))
        # Imports between top-level modules.
        me = top_module(root, f.path)
        if me is not None:
            for t in crate_refs(code):
                if t in modules and t != me:
                    graph[me].add(t)
                    edges[(me, t)].add(f.rel)
        # Action names.
        if not rel_in_src.startswith("runbook/actions/"):
            for i, line in f.non_test(f.code_lines):
                if '"aws:' in line:
                    findings["action-name"].append(f"{f.rel}:{i + 1}: {line.strip()}")
        # bollard (test code included: tests go through the backend too).
        if not rel_in_src.startswith("sandbox/"):
            for i, line in enumerate(f.code_lines):
                if re.search(r"\bbollard\b", line):
                    findings["bollard"].append(f"{f.rel}:{i + 1}: {line.strip()}")
        # Informational.
        skel = "\n".join(l for _, l in f.non_test(f.skel_lines))
        info["Result<_, String> fns"] += result_string_returns(skel)
        info["numeric `as` casts"] += len(CAST_RE.findall(skel))
    for comp in cycles(graph):
        detail = "; ".join(
            f"{a} -> {b} ({', '.join(sorted(edges[(a, b)]))})"
            for a in comp
            for b in comp
            if b in graph[a]
        )
        findings["cycle"].append(f"import cycle between {' , '.join(comp)}: {detail}")
    return findings, info


def main(argv):
    report = "--report" in argv
    args = [a for a in argv if a != "--report"]
    if any(a.startswith("-") for a in args):
        print(__doc__)
        return 2
    root = args[0] if args else "src"
    if not os.path.isdir(root):
        print(f"arch-check: {root} is not a directory", file=sys.stderr)
        return 2
    findings, info = check(root)
    kinds = ["long-fn", "cycle", "action-name", "bollard"]
    for kind in kinds:
        for line in findings[kind]:
            print(f"{kind}: {line}")
    total = sum(len(findings[k]) for k in kinds)
    print(
        "arch-check: "
        + ", ".join(f"{k} {len(findings[k])}" for k in kinds)
        + f"; info: "
        + ", ".join(f"{k} {v}" for k, v in sorted(info.items()))
    )
    if report:
        return 0
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
