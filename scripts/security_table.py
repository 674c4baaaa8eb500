#!/usr/bin/env python3
"""Re-run the adversarial suite under runc (and runsc when Docker has it) and print the
SECURITY.md table: threat, defence, the test that proves it, and the result per runtime.

Usage: scripts/security_table.py [--write SECURITY.md]
The Threat/Defence text comes from the `/// Threat:` and `/// Defence:` lines above each test
in tests/adversarial.rs, so the table cannot drift from the tests.
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SUITE = os.path.join(ROOT, "tests", "adversarial.rs")
BEGIN = "<!-- security-table:begin -->"
END = "<!-- security-table:end -->"


def tests_with_claims():
    """(name, threat, defence) for every test in the suite, in file order."""
    rows, threat, defence = [], None, None
    for line in open(SUITE, encoding="utf-8"):
        line = line.strip()
        if line.startswith("/// Threat:"):
            threat = line[len("/// Threat:"):].strip()
        elif line.startswith("/// Defence:"):
            defence = line[len("/// Defence:"):].strip()
        m = re.match(r"async fn (\w+)\(", line)
        if m:
            if threat and defence:
                rows.append((m.group(1), threat, defence))
            threat, defence = None, None
    return rows


def runsc_available():
    out = subprocess.run(["docker", "info", "--format", "{{json .Runtimes}}"],
                         capture_output=True, text=True)
    return out.returncode == 0 and "runsc" in out.stdout


def run_suite(runtime):
    """{test name: 'pass' | 'FAIL'} for one container runtime."""
    env = dict(os.environ, SCRIPTBOX_TEST_RUNTIME=runtime, SCRIPTBOX_REQUIRE_ENGINE="1",
               SCRIPTBOX_REQUIRE_MOTO="1")
    out = subprocess.run(["cargo", "test", "--quiet", "--test", "adversarial", "--", "--format", "pretty"],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    results = {}
    for m in re.finditer(r"^test (\w+) \.\.\. (ok|FAILED|ignored)", out.stdout, re.M):
        results[m.group(1)] = {"ok": "pass", "FAILED": "FAIL", "ignored": "ignored"}[m.group(2)]
    if not results:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        sys.exit("the adversarial suite did not run under " + runtime)
    return results


def main():
    rows = tests_with_claims()
    runc = run_suite("runc")
    if runsc_available():
        runsc = run_suite("runsc")
    else:
        runsc = {}
    lines = ["| threat | defence | test (`tests/adversarial.rs`) | runc | runsc |",
             "|---|---|---|---|---|"]
    for name, threat, defence in rows:
        lines.append("| {} | {} | `{}` | {} | {} |".format(
            threat, defence, name, runc.get(name, "not run"),
            runsc.get(name, "not run (runsc not installed)" if not runsc else "not run")))
    table = "\n".join(lines)
    failed = [n for n, _, _ in rows if runc.get(n) != "pass" or (runsc and runsc.get(n) != "pass")]
    if len(sys.argv) == 3 and sys.argv[1] == "--write":
        path = sys.argv[2]
        text = open(path, encoding="utf-8").read()
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
        open(path, "w", encoding="utf-8").write(text[:start] + "\n" + table + "\n" + text[end:])
        print("wrote the table into " + path)
    else:
        print(table)
    if failed:
        sys.exit("failing: " + ", ".join(failed))


if __name__ == "__main__":
    main()
