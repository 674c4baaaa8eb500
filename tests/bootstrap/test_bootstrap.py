"""Tests of the in-container bootstraps that run here without Docker.

Run from the repository root:  python3 -m unittest discover -s tests/bootstrap -v
SCRIPTBOX_TEST_PYTHON=/path/to/python3.6 runs the bootstrap under another interpreter.
"""

import glob
import importlib.util
import io
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import unittest
import uuid
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

REPO = harness.REPO


def dedent(code):
    """Script text without the test file's indentation."""
    return textwrap.dedent(code).lstrip("\n")


def sandbox_like_prefix():
    """A command prefix that runs the bootstrap as PID 1 of a new PID namespace (its own /proc)
    as uid 10001, like a container; None where that cannot be done (not root, no unshare)."""
    command = ["unshare", "--pid", "--fork", "--mount-proc",
               "setpriv", "--reuid=10001", "--regid=10001", "--clear-groups"]
    if os.geteuid() != 0:
        return None
    try:
        probe = subprocess.run(command + ["sh", "-c", "test $$ -eq 1"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return command if probe.returncode == 0 else None


def bootstrap_module():
    """The bootstrap imported as a module (its main() runs only as a script)."""
    spec = importlib.util.spec_from_file_location("scriptbox_bootstrap", harness.BOOTSTRAP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BootstrapCase(unittest.TestCase):
    """Helpers shared by the bootstrap tests."""

    def run_request(self, env=None, python=None, task_dir=None, prefix=None, **request):
        """Build a request for a fresh task folder, run the bootstrap, clean up afterwards."""
        task_dir = task_dir or harness.new_task_dir()
        self.addCleanup(harness.remove_task_dir, task_dir)
        run = harness.run_bootstrap(harness.build_request(task_dir, **request), task_dir,
                                    env=env, python=python, prefix=prefix)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run

    def run_raw(self, data, task_dir=None):
        """Run the bootstrap on arbitrary stdin bytes."""
        if task_dir:
            self.addCleanup(harness.remove_task_dir, task_dir)
        run = harness.run_bootstrap(data, task_dir)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run

    def assertPayload(self, run, expected):
        """The step succeeded with this payload."""
        self.assertTrue(run.result["ok"], run.result)
        self.assertEqual(run.result["payload"], expected)

    def assertFailure(self, run, type_name, message=None):
        """The step failed with this error type (and message when given); return the error."""
        self.assertFalse(run.result["ok"], run.result)
        error = run.result["error"]
        self.assertEqual(error["type"], type_name, error)
        if message is not None:
            self.assertEqual(error["message"], message)
        self.assertIsInstance(error["frames"], list)
        return error


class ReturnValues(BootstrapCase):
    """The handler's return value becomes the payload."""

    def test_every_json_type(self):
        values = [{"a": 1, "b": [True, None]}, [1, "two", 3.5], "text", "ünïcødé ✓", 42, -7,
                  3.25, True, False, None, {}, [], {"nested": {"deep": [{"x": []}]}}]
        script = "def handler(events, context):\n    return events['value']\n"
        for value in values:
            with self.subTest(value=value):
                run = self.run_request(script=script, payload={"value": value})
                self.assertPayload(run, value)
                self.assertNotIn("payload_items", run.result)

    def test_none_is_null(self):
        run = self.run_request(script="def handler(e, c):\n    pass\n")
        self.assertEqual(run.result, {"ok": True, "payload": None})

    def test_payload_and_context_received(self):
        script = dedent("""
            import os
            def handler(events, context):
                return {"events": events, "context": context, "cwd": os.getcwd(),
                        "file": __file__}
            """)
        payload = {"Name": "x", "List": [1, 2], "Map": {"k": "v"}, "Flag": True}
        run = self.run_request(script=script, payload=payload)
        self.assertTrue(run.result["ok"], run.result)
        got = run.result["payload"]
        self.assertEqual(got["events"], payload)
        self.assertEqual(got["context"], harness.DEFAULT_CONTEXT)
        self.assertEqual(got["cwd"], run.task_dir)
        self.assertEqual(got["file"], run.task_dir + "/customer_script.py")

    def test_task_folder_layout_and_modes(self):
        script = dedent("""
            import os, stat, sys
            def handler(events, context):
                here = os.getcwd()
                return {"dir_mode": oct(stat.S_IMODE(os.stat(here).st_mode)),
                        "file_mode": oct(stat.S_IMODE(os.stat("customer_script.py").st_mode)),
                        "path0": sys.path[0], "stdin": sys.stdin.read()}
            """)
        run = self.run_request(script=script)
        self.assertPayload(run, {"dir_mode": "0o700", "file_mode": "0o644",
                                 "path0": run.task_dir, "stdin": ""})

    def test_list_is_cut_to_payload_items(self):
        script = "def handler(e, c):\n    return list(range(250))\n"
        run = self.run_request(script=script, limits={"payload_items": 100})
        self.assertTrue(run.result["ok"])
        self.assertEqual(run.result["payload"], list(range(100)))
        self.assertEqual(run.result["payload_items"], 250)

    def test_list_at_the_limit_is_not_cut(self):
        run = self.run_request(script="def handler(e, c):\n    return list(range(100))\n")
        self.assertEqual(run.result, {"ok": True, "payload": list(range(100))})

    def test_nested_lists_are_not_cut(self):
        run = self.run_request(script="def handler(e, c):\n    return {'l': list(range(250))}\n")
        self.assertPayload(run, {"l": list(range(250))})

    def test_unencodable_values(self):
        cases = [
            ("import datetime\ndef handler(e, c):\n    return datetime.datetime(2026, 1, 1)\n",
             "TypeError", "datetime"),
            ("def handler(e, c):\n    return {1, 2}\n", "TypeError", "set"),
            ("def handler(e, c):\n    return b'raw'\n", "TypeError", "bytes"),
            ("def handler(e, c):\n    return {'x': float('nan')}\n", "ValueError", "JSON"),
            ("def handler(e, c):\n    return float('inf')\n", "ValueError", "JSON"),
            ("def handler(e, c):\n    return 'lone \\udcff'\n", "UnicodeEncodeError", "surrogate"),
        ]
        for script, type_name, fragment in cases:
            with self.subTest(type_name=type_name, fragment=fragment):
                error = self.assertFailure(self.run_request(script=script), type_name)
                self.assertIn(fragment, error["message"])
                self.assertEqual(error["frames"], [])  # the encoder's frames are not the customer's

    def test_deep_nesting_is_a_recursion_error(self):
        script = dedent("""
            def handler(events, context):
                value = []
                for _ in range(200000):
                    value = [value]
                return value
            """)
        self.assertFailure(self.run_request(script=script), "RecursionError")

    def test_large_payload(self):
        run = self.run_request(script="def handler(e, c):\n    return 'x' * 3000000\n")
        self.assertPayload(run, "x" * 3000000)


class Errors(BootstrapCase):
    """Exceptions and bootstrap errors are reported with the customer's frames only."""

    def test_exception_frames_are_the_customers(self):
        script = dedent("""
            import json

            def lookup(events):
                return events['x']

            def handler(events, context):
                json.loads('{}')
                return lookup(events)
            """)
        error = self.assertFailure(self.run_request(script=script), "KeyError", "'x'")
        path = error["frames"][0]["file"]
        self.assertTrue(path.endswith("/customer_script.py"), path)
        self.assertEqual([(f["line"], f["function"], f["code"]) for f in error["frames"]],
                         [(8, "handler", "return lookup(events)"),
                          (4, "lookup", "return events['x']")])
        for frame in error["frames"]:
            self.assertRegex(frame["file"], r"^/tmp/[0-9a-f-]{36}-[0-9-]{19}/customer_script\.py$")

    def test_stdlib_frames_are_left_out(self):
        script = "import json\ndef handler(e, c):\n    return json.loads('not json')\n"
        error = self.assertFailure(self.run_request(script=script), "JSONDecodeError")
        self.assertEqual([(f["line"], f["function"]) for f in error["frames"]], [(3, "handler")])

    def test_custom_exception(self):
        script = dedent("""
            class StepBroke(Exception):
                pass
            def handler(e, c):
                raise StepBroke("disk is full: " + "é")
            """)
        self.assertFailure(self.run_request(script=script), "StepBroke", "disk is full: é")

    def test_missing_handler(self):
        run = self.run_request(script="def handler(e, c):\n    return 1\n", function="x")
        self.assertFailure(run, "HandlerNotFound", "Handler 'x' not found in module 'customer_script'")

    def test_handler_not_callable(self):
        run = self.run_request(script="handler = 3\n")
        self.assertFailure(run, "HandlerNotFound")

    def test_syntax_error(self):
        script = "def handler(e, c):\n    x = 1\n    return (x\n\n"
        error = self.assertFailure(self.run_request(script=script), "SyntaxError")
        self.assertTrue(error["message"].startswith(
            "Unable to import module 'customer_script': "), error["message"])
        self.assertTrue(error["frames"], error)
        self.assertTrue(error["frames"][-1]["file"].endswith("/customer_script.py"))
        self.assertIn(error["frames"][-1]["line"], (3, 4, 5))

    def test_syntax_error_line(self):
        script = "x = 1\n\ndef handler(e, c)\n    return 1\n"
        error = self.assertFailure(self.run_request(script=script), "SyntaxError")
        self.assertEqual(error["frames"][-1]["line"], 3)
        self.assertEqual(error["frames"][-1]["code"], "def handler(e, c)")

    def test_import_error_in_script(self):
        script = "import no_such_module_scriptbox\ndef handler(e, c):\n    return 1\n"
        error = self.assertFailure(
            self.run_request(script=script), "ModuleNotFoundError",
            "Unable to import module 'customer_script': No module named 'no_such_module_scriptbox'")
        self.assertEqual([(f["line"], f["function"]) for f in error["frames"]], [(1, "<module>")])

    def test_exception_at_import_time(self):
        script = "x = {}['k']\ndef handler(e, c):\n    return 1\n"
        error = self.assertFailure(self.run_request(script=script), "KeyError",
                                   "Unable to import module 'customer_script': 'k'")
        self.assertEqual(error["frames"][0]["line"], 1)

    def test_missing_module(self):
        run = self.run_request(files=[("other.py", b"")], module="absent", function="f")
        error = self.assertFailure(run, "ModuleNotFoundError",
                                   "Unable to import module 'absent': No module named 'absent'")
        self.assertEqual(error["frames"], [])

    def test_system_exit(self):
        run = self.run_request(script="import sys\ndef handler(e, c):\n    sys.exit(3)\n")
        error = self.assertFailure(run, "SystemExit", "3")
        self.assertEqual(error["frames"][0]["line"], 3)
        run = self.run_request(script="import sys\ndef handler(e, c):\n    sys.exit()\n")
        self.assertFailure(run, "SystemExit", "None")

    def test_keyboard_interrupt(self):
        run = self.run_request(script="def handler(e, c):\n    raise KeyboardInterrupt\n")
        self.assertFailure(run, "KeyboardInterrupt", "")

    def test_recursion_in_handler(self):
        script = "def handler(e, c):\n    return handler(e, c)\n"
        error = self.assertFailure(self.run_request(script=script), "RecursionError")
        self.assertTrue(0 < len(error["frames"]) <= 100, len(error["frames"]))
        self.assertTrue(all(f["file"].endswith("customer_script.py") for f in error["frames"]))

    def test_unprintable_exception(self):
        script = dedent("""
            class Odd(Exception):
                def __str__(self):
                    raise RuntimeError("no")
            def handler(e, c):
                raise Odd()
            """)
        self.assertFailure(self.run_request(script=script), "Odd", "<unprintable Odd object>")

    def test_fork_does_not_give_two_results(self):
        script = dedent("""
            import os
            def handler(e, c):
                pid = os.fork()
                return "child" if pid == 0 else "parent"
            """)
        run = self.run_request(script=script)  # the harness asserts a single R frame
        self.assertPayload(run, "parent")


class Output(BootstrapCase):
    """Everything the handler prints is log (O frames or stderr), never the payload."""

    def test_prints_go_to_the_log(self):
        script = dedent("""
            import os, sys
            def handler(e, c):
                print("to stdout")
                print("to stderr", file=sys.stderr)
                print("R\\x00\\x00\\x00\\x05fake!O\\x00\\x00\\x00\\x01")
                sys.stdout.buffer.write(b"\\xff\\xfe not utf-8\\n")
                sys.stdout.flush()
                os.write(1, b"\\x80raw fd 1\\n")
                print("surrogate \\udcff")
                sys.stdout.write("no newline at the end")
                return "payload"
            """)
        run = self.run_request(script=script)
        self.assertPayload(run, "payload")
        self.assertEqual(
            run.output,
            b"to stdout\nR\x00\x00\x00\x05fake!O\x00\x00\x00\x01\n\xff\xfe not utf-8\n"
            b"\x80raw fd 1\nsurrogate \\udcff\nno newline at the end")
        self.assertIn("to stderr", run.stderr)
        self.assertNotIn("to stdout", run.stderr)

    def test_child_process_output_is_framed(self):
        script = dedent("""
            import subprocess
            def handler(e, c):
                print("before")
                subprocess.Popen(["sh", "-c", "echo child; echo child-err >&2"]).wait()
                print("after")
                return 1
            """)
        run = self.run_request(script=script)
        self.assertPayload(run, 1)
        self.assertEqual(run.stdout_text, "before\nchild\nafter\n")
        self.assertIn("child-err", run.stderr)

    def test_background_child_holding_stdout(self):
        pid_file = "/tmp/scriptbox-test-child-{}.pid".format(uuid.uuid4())
        self.addCleanup(self.kill_pid_in, pid_file)
        script = dedent("""
            import subprocess
            def handler(e, c):
                child = subprocess.Popen(["sh", "-c", "echo started; exec sleep 30"],
                                         stderr=subprocess.DEVNULL)
                with open(%r, "w") as f:
                    f.write(str(child.pid))
                return "done"
            """ % pid_file)
        run = self.run_request(script=script)
        self.assertPayload(run, "done")
        self.assertLess(run.seconds, 2.0)

    def test_a_late_forged_result_from_a_child_never_wins(self):
        # As in a container: the bootstrap is the first process of its own PID namespace and
        # runs as a non-root user, so it may end every other process before its result.
        prefix = sandbox_like_prefix()
        if prefix is None:
            self.skipTest("SKIPPED: cannot make a PID namespace here (unshare/setpriv as root)")
        script = dedent("""
            import os, struct, time
            def handler(e, c):
                forged = b'{"ok":true,"payload":"forged"}'
                frame = b"R" + struct.pack(">I", len(forged)) + forged
                if os.fork() == 0:
                    # After the handler returned: write a result on every descriptor it has,
                    # the bootstrap's private stdout among them.
                    time.sleep(0.1)
                    for fd in range(64):
                        try:
                            os.write(fd, frame)
                        except OSError:
                            pass
                    os._exit(0)
                print("before the return")
                return "genuine"
            """)
        run = self.run_request(script=script, prefix=prefix)
        self.assertPayload(run, "genuine")
        self.assertEqual(run.stdout_text, "before the return\n")
        self.assertLess(run.seconds, 5.0)

    def test_only_the_first_process_of_its_own_namespace_ends_others(self):
        bootstrap = bootstrap_module()
        may = bootstrap.may_end_other_processes
        self.assertTrue(may(1, 0, 10001, ""))  # the init of its own namespace
        self.assertTrue(may(7, 1, 10001, "docker-init"))  # under Docker's init
        self.assertFalse(may(7, 1, 0, "docker-init"))  # never as root
        self.assertFalse(may(1, 0, 0, ""))
        self.assertFalse(may(7, 1, 10001, "systemd"))  # a daemon under a host's init
        self.assertFalse(may(7, 1, 10001, ""))  # PID 1 unreadable
        self.assertFalse(may(7, 57, 10001, "docker-init"))  # not init's child
        # This very test run: never.
        self.assertFalse(may(os.getpid(), os.getppid(), 10001, bootstrap.init_name()))

    def kill_pid_in(self, pid_file):
        """Stop the background child a test left behind (a container would be removed)."""
        try:
            with open(pid_file) as f:
                os.kill(int(f.read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
        if os.path.exists(pid_file):
            os.unlink(pid_file)

    def test_large_output(self):
        script = dedent("""
            import sys
            def handler(e, c):
                line = "x" * 99 + "\\n"
                for _ in range(50000):
                    sys.stdout.write(line)
                return len(line) * 50000
            """)
        run = self.run_request(script=script)
        self.assertPayload(run, 5000000)
        self.assertEqual(len(run.output), 5000000)
        self.assertTrue(all(len(body) <= 65536 for _kind, body in run.frames[:-1]))

    def test_frames_only_on_stdout(self):
        run = self.run_request(script="def handler(e, c):\n    print('x' * 10)\n    return 2\n")
        self.assertEqual([kind for kind, _ in run.frames], [b"O", b"R"])


class Attachments(BootstrapCase):
    """.py and .zip attachments."""

    def test_py_attachment_with_file_method(self):
        helpers = b"def method(events, context):\n    return {'from': __name__, 'n': events['n']}\n"
        run = self.run_request(files=[("helpers.py", helpers)], module="helpers", function="method",
                               payload={"n": 5})
        self.assertPayload(run, {"from": "helpers", "n": 5})

    def test_long_attachment_name(self):
        name = "m" * 150 + ".py"  # over ustar's 100 bytes: the tar carries a pax header
        run = self.run_request(files=[(name, b"def f(e, c):\n    return 'long'\n")],
                               module="m" * 150, function="f")
        self.assertPayload(run, "long")

    def test_zip_package_imported_from_inline_script(self):
        setuid = zipfile.ZipInfo("pkg/tool.sh")
        setuid.external_attr = (stat.S_IFREG | 0o6755) << 16
        lib = harness.build_zip([
            ("pkg/", b""),
            ("pkg/__init__.py", b"VALUE = 41\n"),
            ("pkg/sub/__init__.py", b""),
            ("pkg/sub/mod.py", b"def plus_one(x):\n    return x + 1\n"),
            (setuid, b"#!/bin/sh\n"),
        ])
        script = dedent("""
            import os, stat
            import pkg
            from pkg.sub.mod import plus_one
            def mode(path):
                return oct(stat.S_IMODE(os.stat(path).st_mode))
            def handler(e, c):
                return {"value": plus_one(pkg.VALUE), "pkg": mode("pkg"), "sub": mode("pkg/sub"),
                        "file": mode("pkg/__init__.py"), "setuid": mode("pkg/tool.sh")}
            """)
        run = self.run_request(script=script, files=[("lib.zip", lib)], zips=["lib.zip"])
        self.assertPayload(run, {"value": 42, "pkg": "0o755", "sub": "0o755", "file": "0o644",
                                 "setuid": "0o644"})

    def test_two_zips_share_a_directory(self):
        one = harness.build_zip([("common/", b""), ("common/a.py", b"A = 1\n")])
        two = harness.build_zip([("common/", b""), ("common/b.py", b"B = 2\n")])
        script = "from common import a, b\ndef handler(e, c):\n    return a.A + b.B\n"
        run = self.run_request(script=script, files=[("one.zip", one), ("two.zip", two)],
                               zips=["one.zip", "two.zip"])
        self.assertPayload(run, 3)

    def expect_refused(self, members, rule, zip_limits=None, outside=()):
        """Expanding a zip of these members fails with AttachmentError naming the rule."""
        script = "def handler(e, c):\n    return 'ran'\n"
        run = self.run_request(script=script, files=[("evil.zip", harness.build_zip(members))],
                               zips=["evil.zip"], limits=zip_limits)
        error = self.assertFailure(run, "AttachmentError")
        self.assertIn("evil.zip", error["message"])
        self.assertRegex(error["message"], rule)
        for path in outside:
            self.assertFalse(os.path.lexists(path), path)
        with open(os.path.join(run.task_dir, "customer_script.py"), "rb") as f:
            self.assertEqual(f.read(), script.encode())
        return error

    def test_zip_slip_variants(self):
        tag = uuid.uuid4().hex
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        fifo = zipfile.ZipInfo("fifo")
        fifo.external_attr = (stat.S_IFIFO | 0o644) << 16
        device = zipfile.ZipInfo("dev")
        device.external_attr = (stat.S_IFCHR | 0o644) << 16
        cases = [
            ([("../x-" + tag, b"x")], r"'\.\.'", ["/tmp/x-" + tag]),
            ([("a/../../y-" + tag, b"x")], r"'\.\.'", ["/tmp/y-" + tag]),
            ([("/tmp/abs-" + tag, b"x")], "absolute", ["/tmp/abs-" + tag]),
            ([(link, "/etc/passwd")], "symbolic link", []),
            ([(fifo, b"")], "special", []),
            ([(device, b"")], "special", []),
            ([("dup.txt", b"1"), ("dup.txt", b"2")], "already written", []),
            ([("n" * 256, b"x")], "255 bytes", []),
            ([("/".join(["d" * 200] * 6), b"x")], "1024 bytes", []),
            ([("customer_script.py", b"def handler(e, c):\n    return 'hijacked'\n")],
             "already written", []),
            ([("evil.zip", b"x")], "already written", []),
            ([("a\\..\\b", b"x")], "backslash", []),
            ([("a//b", b"x")], "empty", []),
            ([("file", b"x"), ("file/inner", b"y")], "already a file", []),
            ([("dir/inner", b"x"), ("dir", b"y")], "directory", []),
        ]
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zipfile warns about the duplicate name
            for members, rule, outside in cases:
                with self.subTest(name=str(members[0][0])[:60]):
                    self.expect_refused(members, rule, outside=outside)

    def test_entry_limit(self):
        members = [("f{}.txt".format(i), b"x") for i in range(5)]
        self.expect_refused(members, "unzip_entries", zip_limits={"unzip_entries": 3})

    def test_zip_bomb(self):
        script = "def handler(e, c):\n    return 'ran'\n"
        bomb = harness.build_zip([("zeros.bin", bytes(50 * 1024 * 1024))])
        self.assertLess(len(bomb), 200 * 1024)
        limit = 1024 * 1024
        run = self.run_request(script=script, files=[("bomb.zip", bomb)], zips=["bomb.zip"],
                               limits={"unzip_bytes": limit})
        error = self.assertFailure(run, "AttachmentError")
        self.assertIn("bomb.zip", error["message"])
        self.assertIn("zeros.bin", error["message"])
        self.assertIn("unzip_bytes", error["message"])
        expanded = harness.folder_bytes(run.task_dir) - len(bomb) - len(script)
        self.assertLessEqual(expanded, limit)
        self.assertLess(run.seconds, 10)

    def test_byte_limit_counts_all_zips(self):
        one = harness.build_zip([("a.bin", bytes(600))])
        two = harness.build_zip([("b.bin", bytes(600))])
        run = self.run_request(script="def handler(e, c):\n    return 1\n",
                               files=[("one.zip", one), ("two.zip", two)],
                               zips=["one.zip", "two.zip"], limits={"unzip_bytes": 1000})
        error = self.assertFailure(run, "AttachmentError")
        self.assertIn("two.zip", error["message"])

    def test_nested_zip_is_written_not_expanded(self):
        inner = harness.build_zip([("inner.py", b"X = 1\n")])
        outer = harness.build_zip([("inner.zip", inner), ("outer.py", b"Y = 2\n")])
        script = dedent("""
            import os
            def handler(e, c):
                return sorted(os.listdir("."))
            """)
        run = self.run_request(script=script, files=[("outer.zip", outer)], zips=["outer.zip"])
        self.assertPayload(run, ["customer_script.py", "inner.zip", "outer.py", "outer.zip"])
        with open(os.path.join(run.task_dir, "inner.zip"), "rb") as f:
            self.assertEqual(f.read(), inner)

    def test_not_a_zip(self):
        run = self.run_request(script="def handler(e, c):\n    return 1\n",
                               files=[("lib.zip", b"PK\x03\x04 this is not a zip")],
                               zips=["lib.zip"])
        error = self.assertFailure(run, "AttachmentError")
        self.assertIn("lib.zip", error["message"])

    def test_unlisted_zip_is_a_plain_file(self):
        lib = harness.build_zip([("x.py", b"")])
        script = "import os\ndef handler(e, c):\n    return sorted(os.listdir('.'))\n"
        run = self.run_request(script=script, files=[("lib.zip", lib)])
        self.assertPayload(run, ["customer_script.py", "lib.zip"])


class BadRequests(BootstrapCase):
    """A bad header or archive gives a ProtocolError result and writes nothing outside task_dir."""

    def header(self, **fields):
        """A valid header (dict) for an empty archive, with fields replaced."""
        header = json.loads(harness.build_request(harness.new_task_dir(), archive=b"")
                            .split(b"\n")[0].decode())
        header.update(fields)
        return header

    def expect_protocol_error(self, data, fragment=None, task_dir=None):
        """Running on these stdin bytes gives a ProtocolError; return the error."""
        run = self.run_raw(data, task_dir)
        error = self.assertFailure(run, "ProtocolError")
        self.assertEqual(error["frames"], [])
        if fragment:
            self.assertIn(fragment, error["message"])
        return error

    def test_not_json(self):
        self.expect_protocol_error(b"this is not json\n", "JSON")
        self.expect_protocol_error(b"[1, 2]\n", "object")
        self.expect_protocol_error(b"\xff\xfe\n", "UTF-8")
        self.expect_protocol_error(b'{"v": NaN}\n')
        self.expect_protocol_error(b"", "header")
        self.expect_protocol_error(b'{"v": 1}', "newline")
        self.expect_protocol_error(b"[" * 100000 + b"]" * 100000 + b"\n")

    def test_header_over_4_mib(self):
        header = self.header(payload={"big": "x" * (4 * 1024 * 1024)})
        self.expect_protocol_error(json.dumps(header).encode() + b"\n", "header line over")

    def test_bad_task_dirs(self):
        tag = uuid.uuid4()
        stamp = "2026-11-27-12-30-05"
        for task_dir in ["/etc/x", "/tmp/../etc", "/tmp/{}-{}/../../etc".format(tag, stamp),
                         "/tmp/{}-{}\n".format(tag, stamp), "/tmp/{}-{}/x".format(tag, stamp),
                         "tmp/{}-{}".format(tag, stamp), "/tmp/{}-2026-11-27".format(tag),
                         "/tmp/{}-{}".format(str(tag).upper(), stamp),
                         "/tmp/{}-{}".format(tag, stamp.replace("1", "\u0661")), 5, None]:
            with self.subTest(task_dir=task_dir):
                data = json.dumps(self.header(task_dir=task_dir)).encode() + b"\n"
                self.expect_protocol_error(data, "task_dir")
        self.assertFalse(os.path.lexists("/tmp/{}-{}".format(tag, stamp)))

    def test_bad_fields(self):
        cases = [({"v": 2}, "version"), ({"v": True}, "version"), ({"language": "powershell"},
                 "language"), ({"entry": None}, "entry"), ({"entry": {"module": "a/b",
                 "function": "f"}}, "entry.module"), ({"entry": {"module": "m", "function": ""}},
                 "entry.function"), ({"context": []}, "context"), ({"zips": "a.zip"}, "zips"),
                 ({"limits": {"unzip_bytes": 1}}, "limits"), ({"archive_bytes": -1},
                 "archive_bytes"), ({"zips": ["a.zip", "a.zip"]}, "twice")]
        for fields, fragment in cases:
            with self.subTest(fields=fields):
                header = self.header(**fields)
                data = json.dumps(header).encode() + b"\n"
                self.expect_protocol_error(data, fragment, task_dir=header["task_dir"])
        header = self.header()
        del header["payload"]
        self.expect_protocol_error(json.dumps(header).encode() + b"\n", "payload")

    def archive_request(self, members, **request):
        """Stdin bytes for a hand-made archive; return (data, task_dir)."""
        task_dir = harness.new_task_dir()
        archive = harness.build_tar(members)
        return harness.build_request(task_dir, archive=archive, **request), task_dir

    def test_bad_archive_members(self):
        tag = uuid.uuid4().hex
        link = tarfile.TarInfo("customer_script.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        hard = tarfile.TarInfo("hard")
        hard.type, hard.linkname = tarfile.LNKTYPE, "customer_script.py"
        device = tarfile.TarInfo("dev")
        device.type = tarfile.CHRTYPE
        directory = tarfile.TarInfo("dir")
        directory.type = tarfile.DIRTYPE
        cases = [
            ([("sub/x.py", b"x")], "'/'"),
            ([("../escape-" + tag, b"x")], "'/'"),
            ([("..", b"x")], "plain"),
            ([(link, None)], "not a regular file"),
            ([("customer_script.py", b"x"), (hard, None)], "not a regular file"),
            ([(device, None)], "not a regular file"),
            ([(directory, None)], "not a regular file"),
            ([("a.py", b"1"), ("a.py", b"2")], "twice"),
            ([("n" * 256, b"x")], "255"),
        ]
        for members, fragment in cases:
            with self.subTest(member=str(members[-1][0])):
                data, task_dir = self.archive_request(members)
                self.expect_protocol_error(data, fragment, task_dir=task_dir)
                self.assertFalse(os.path.islink(os.path.join(task_dir, "customer_script.py")))
        self.assertFalse(os.path.lexists("/tmp/escape-" + tag))

    def test_gnu_long_name_entry(self):
        # The host's tar writer stores a name over 100 bytes in a GNU long-name ('L') entry.
        name = "g" * 180 + ".py"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as archive:
            for member_name, data in ((name, b"def f(e, c):\n    return 'gnu'\n"),):
                info = tarfile.TarInfo(member_name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        self.assertIn(b"././@LongLink", buf.getvalue())
        run = self.run_request(archive=buf.getvalue(), module="g" * 180, function="f")
        self.assertPayload(run, "gnu")

    def test_archive_modes_are_fixed(self):
        member = tarfile.TarInfo("tool.py")
        member.mode = 0o6777
        script = dedent("""
            import os, stat
            def handler(e, c):
                return oct(stat.S_IMODE(os.stat("tool.py").st_mode))
            """).encode()
        run = self.run_request(archive=harness.build_tar([("customer_script.py", script),
                                                          (member, b"")]))
        self.assertPayload(run, "0o644")

    def test_truncated_archive(self):
        task_dir = harness.new_task_dir()
        data = harness.build_request(task_dir, script="def handler(e, c):\n    return 1\n")
        head, archive = data.split(b"\n", 1)
        header = json.loads(head.decode())
        header["archive_bytes"] += 4096
        self.expect_protocol_error(json.dumps(header).encode() + b"\n" + archive, "truncated",
                                   task_dir=task_dir)
        data = harness.build_request(task_dir + "0", script="def handler(e, c):\n    return 1\n")
        self.expect_protocol_error(data[:-2000], None, task_dir=task_dir + "0")

    def test_not_a_tar(self):
        task_dir = harness.new_task_dir()
        data = harness.build_request(task_dir, archive=b"\x01" * 1024)
        self.expect_protocol_error(data, "ustar", task_dir=task_dir)

    def test_zip_not_in_archive(self):
        task_dir = harness.new_task_dir()
        data = harness.build_request(task_dir, script="def handler(e, c):\n    return 1\n",
                                     zips=["absent.zip"])
        self.expect_protocol_error(data, "absent.zip", task_dir=task_dir)

    def test_existing_task_dir(self):
        task_dir = harness.new_task_dir()
        os.mkdir(task_dir)
        data = harness.build_request(task_dir, script="def handler(e, c):\n    return 1\n")
        self.expect_protocol_error(data, "task_dir", task_dir=task_dir)
        self.assertEqual(os.listdir(task_dir), [])


class Preimport(BootstrapCase):
    """SCRIPTBOX_PREIMPORT loads modules before the request arrives."""

    def test_preimport(self):
        folder = tempfile.mkdtemp(prefix="scriptbox-preimport-")
        self.addCleanup(shutil.rmtree, folder)
        with open(os.path.join(folder, "noisy_pre.py"), "w") as f:
            f.write("print('noisy at import')\n")
        script = dedent("""
            import os, sys
            def handler(e, c):
                return [name in sys.modules for name in ("json", "colorsys", "noisy_pre")] + [
                    "SCRIPTBOX_PREIMPORT" in os.environ]
            """)
        env = {"SCRIPTBOX_PREIMPORT": "json, colorsys,no_such_module_scriptbox,,noisy_pre",
               "PYTHONPATH": folder}
        run = self.run_request(script=script, env=env)
        self.assertPayload(run, [True, True, True, False])
        self.assertEqual(run.stdout_text, "noisy at import\n")  # framed, not corrupting stdout


def find_interpreters():
    """CPython 3.6 ... 3.13 interpreters on this machine: {"3.6": path}."""
    found = {}
    pyenv = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    for minor in range(6, 14):
        version = "3.{}".format(minor)
        candidates = [shutil.which("python" + version)]
        candidates += sorted(glob.glob(os.path.join(pyenv, "versions", version + ".*", "bin",
                                                    "python3")))
        for candidate in candidates:
            if not candidate:
                continue
            try:
                out = subprocess.run([candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                continue
            if out.returncode == 0 and out.stdout.decode().strip() == version:
                found[version] = candidate
                break
    return found


class Interpreters(BootstrapCase):
    """The bootstrap runs unchanged on every CPython from 3.6 to 3.13 found here."""

    SCRIPT = dedent("""
        import subprocess, sys
        import pkg
        def handler(events, context):
            print("hello from", sys.version_info[:2])
            subprocess.Popen(["sh", "-c", "echo child"]).wait()
            if events.get("fail"):
                return events["missing"]
            return [pkg.N, context["global:REGION"]] + list(range(148))
        """)

    def test_each_interpreter(self):
        interpreters = find_interpreters()
        lib = harness.build_zip([("pkg/__init__.py", b"N = 7\n")])
        for minor in range(6, 14):
            version = "3.{}".format(minor)
            with self.subTest(python=version):
                if version not in interpreters:
                    print("\n  skipped CPython {}: no such interpreter on this machine".format(
                        version), file=sys.stderr)
                    continue
                python = interpreters[version]
                run = self.run_request(script=self.SCRIPT, files=[("lib.zip", lib)],
                                       zips=["lib.zip"], python=python)
                self.assertTrue(run.result["ok"], (version, run.result, run.stderr))
                self.assertEqual(run.result["payload"][:3], [7, "us-east-1", 0])
                self.assertEqual(len(run.result["payload"]), 100)
                self.assertEqual(run.result["payload_items"], 150)
                self.assertIn("child\n", run.stdout_text)
                run = self.run_request(script=self.SCRIPT, files=[("lib.zip", lib)],
                                       zips=["lib.zip"], payload={"fail": True}, python=python)
                error = self.assertFailure(run, "KeyError", "'missing'")
                self.assertEqual([f["line"] for f in error["frames"]], [7])


class StaticChecks(unittest.TestCase):
    """Checks of files that cannot run here (no Docker registry, no pwsh)."""

    def read(self, *parts):
        """Text of a file of the repository."""
        with open(os.path.join(REPO, *parts), encoding="utf-8") as f:
            return f.read()

    def test_vermin_python_36(self):
        try:
            import vermin  # noqa: F401 -- only to know whether it is installed
        except ImportError:
            self.skipTest("vermin is not installed (pip install vermin): the 3.6 check did not run")
        # vermin has no __main__ module ("python3 -m vermin" fails): call its entry point.
        runner = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"
        out = subprocess.run([sys.executable, "-c", runner, "-t=3.6-", "--violations", "--no-tips",
                              os.path.join(REPO, "images", "python", "bootstrap.py")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        text = out.stdout.decode("utf-8", "replace")
        self.assertEqual(out.returncode, 0, text)
        self.assertNotIn("Target versions not met", text)

    def test_python_dockerfile(self):
        text = self.read("images", "python", "Dockerfile")
        self.assertRegex(text, r"(?m)^ARG PYTHON_VERSION")
        self.assertRegex(text, r"(?m)^ARG BOTO3_VERSION")
        self.assertIn("FROM python:${PYTHON_VERSION}-slim", text)
        self.assertIn("--target /opt/python", text)
        self.assertIn("boto3==${BOTO3_VERSION}", text)
        self.assertRegex(text, r"(?m)^USER 10001:10001")
        self.assertIn("-perm /6000", text)
        self.assertIn("chmod a-s", text)
        self.assertIn("/opt/scriptbox/bootstrap.py", text)
        self.assertIn("scriptbox.runtime-family=python", text)
        self.assertIn('CMD ["python3", "/opt/scriptbox/bootstrap.py"]', text)

    def test_powershell_dockerfile(self):
        text = self.read("images", "powershell", "Dockerfile")
        self.assertRegex(text, r"(?m)^ARG POWERSHELL_IMAGE")
        self.assertRegex(text, r"(?m)^USER 10001:10001")
        self.assertIn("-perm /6000", text)
        for module in ("Microsoft.PowerShell.Host", "Microsoft.PowerShell.Management",
                       "Microsoft.PowerShell.Security", "Microsoft.PowerShell.Utility",
                       "PackageManagement", "PowerShellGet"):
            self.assertIn(module, text)
        self.assertIn("scriptbox.runtime-family=powershell", text)
        self.assertIn('"-File", "/opt/scriptbox/bootstrap.ps1"', text)

    def test_powershell_bootstrap(self):
        text = self.read("images", "powershell", "bootstrap.ps1")
        for needle in ("InputPayload", "0x4F", "0x52", "OpenStandardInput", "OpenStandardOutput",
                       "customer_script.ps1", "ZipArchive", "unzip_bytes", "unzip_entries",
                       "payload_items", "AttachmentError", "ProtocolError", "ConvertTo-Json",
                       "[Environment]::Exit(0)", "ScriptStackTrace", "SetOut"):
            self.assertIn(needle, text)
        # Balanced braces and parentheses outside strings and comments: a cheap syntax guard,
        # since pwsh cannot run here.
        stripped = strip_powershell_strings(text)
        for open_char, close_char in ("{}", "()", "[]"):
            self.assertEqual(stripped.count(open_char), stripped.count(close_char),
                             "unbalanced {}{}".format(open_char, close_char))
        # pwsh -File reads stdin itself as pipeline input when the script uses $input.
        self.assertNotRegex(stripped, r"(?i)\$input\b")

    def test_powershell_bootstrap_parses(self):
        try:
            import tree_sitter
            import tree_sitter_powershell
        except ImportError:
            self.skipTest("tree-sitter-powershell is not installed "
                          "(pip install tree-sitter tree-sitter-powershell): syntax not checked")
        parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
        with open(os.path.join(REPO, "images", "powershell", "bootstrap.ps1"), "rb") as f:
            source = f.read()
        problems = []

        def walk(node):
            if node.type == "ERROR" or node.is_missing:
                problems.append("line {}: {}".format(node.start_point[0] + 1, node.type))
            for child in node.children:
                walk(child)

        walk(parser.parse(source).root_node)
        self.assertEqual(problems, [])

    def test_python_dockerfile_self_test_runs_here(self):
        # The image build ends with a shell self-test; run that same shell text here against the
        # bootstrap in the repository (a stand-in boto3 module gives the version).
        for tool in ("sh", "tar", "stat"):
            if shutil.which(tool) is None:
                self.skipTest("{} is not installed: the Dockerfile self-test was not run".format(tool))
        text = self.read("images", "python", "Dockerfile").replace("\\\n", "")
        command = [line for line in text.splitlines() if line.startswith("RUN set -e; cd /tmp;")]
        self.assertEqual(len(command), 1)
        work = tempfile.mkdtemp(prefix="scriptbox-selftest-")
        self.addCleanup(shutil.rmtree, work)
        task_dir = "/tmp/00000000-0000-4000-8000-000000000000-2000-01-01-00-00-00"
        self.addCleanup(harness.remove_task_dir, task_dir)
        harness.remove_task_dir(task_dir)
        with open(os.path.join(work, "boto3.py"), "w") as f:
            f.write("__version__ = '1.2.3'\n")
        script = (command[0][len("RUN "):].replace("cd /tmp", "cd " + work)
                  .replace("/opt/scriptbox/bootstrap.py", harness.BOOTSTRAP)
                  .replace("/tmp/00000000-*", task_dir))
        env = dict(os.environ, BOTO3_VERSION="1.2.3", PYTHONPATH=work)
        ok = subprocess.run(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, timeout=60)
        self.assertEqual(ok.returncode, 0, ok.stdout)
        env["BOTO3_VERSION"] = "9.9.9"  # and it does fail when the result is not the expected one
        bad = subprocess.run(["sh", "-c", script], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, timeout=60)
        self.assertNotEqual(bad.returncode, 0)
        self.assertIn(b"bootstrap self-test failed", bad.stdout)

    def test_dockerfiles_self_test_the_bootstrap(self):
        for family, needle in (("python", "python3 /opt/scriptbox/bootstrap.py < request"),
                               ("powershell", "-File /opt/scriptbox/bootstrap.ps1 < request")):
            text = self.read("images", family, "Dockerfile")
            self.assertIn(needle, text)
            # The self-test runs after USER, as the runtime user.
            self.assertLess(text.index("USER 10001:10001"), text.index(needle))


def strip_powershell_strings(text):
    """PowerShell text without comments, here-strings and quoted strings (rough, for counting)."""
    text = re.sub(r"<#.*?#>", "", text, flags=re.S)
    text = re.sub(r"@'.*?'@", "''", text, flags=re.S)
    text = re.sub(r'@".*?"@', '""', text, flags=re.S)
    out = []
    for line in text.splitlines():
        line = re.sub(r"'[^']*'", "''", line)
        line = re.sub(r'"(?:`.|[^"`])*"', '""', line)
        line = line.split("#", 1)[0]
        out.append(line)
    return "\n".join(out)


if __name__ == "__main__":
    unittest.main()
