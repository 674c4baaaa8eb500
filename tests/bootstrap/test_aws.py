"""Tests of the header's `aws` field in images/python/bootstrap.py: the AWS variables, the
relay from 127.0.0.1 to the egress Unix socket, the proxy variables and AWS_ENDPOINT_URL, the
validation of the field, and (with Docker) the old-botocore patch in the runtime images.

Judged from the outside: a Unix socket server of the test (harness.UnixEchoServer) records what
reached it, and the handler reports what it saw through the relay.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

# Variables the bootstrap sets; removed from the test's own environment before each run, so
# that "absent" means absent.
RELAY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY",
                   "no_proxy", "AWS_ENDPOINT_URL")
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "ASIATESTKEY0000001",
               "AWS_SECRET_ACCESS_KEY": "secret-7f3c1e9a-not-to-be-printed",
               "AWS_SESSION_TOKEN": "token-" + "x" * 600}

# A module given to every handler: talks to the relay named in HTTPS_PROXY.
RELAY_CLIENT = textwrap.dedent("""
    import hashlib, os, socket, threading, time

    def proxy_address():
        url = os.environ["HTTPS_PROXY"]
        host, port = url[len("http://"):].split(":")
        return host, int(port)

    def connect():
        sock = socket.create_connection(proxy_address(), timeout=30)
        return sock

    def read_exactly(sock, count):
        data = b""
        while len(data) < count:
            chunk = sock.recv(min(65536, count - len(data)))
            if not chunk:
                break
            data += chunk
        return data

    def exchange(size, seed=b"x"):
        # Send size bytes (from a thread, while reading), half-close, read the greeting and the
        # echo until EOF. Returns what was seen.
        block = hashlib.sha256(seed).digest() * 2048  # 64 KiB
        payload = (block * (size // len(block) + 1))[:size]
        sock = connect()
        sender_error = []
        def send():
            try:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                sender_error.append(repr(exc))
        sender = threading.Thread(target=send)
        sender.start()
        greeting = read_exactly(sock, 6)
        digest = hashlib.sha256()
        received = 0
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            digest.update(chunk)
            received += len(chunk)
        sender.join(30)
        sock.close()
        return {"greeting": greeting.decode("ascii", "replace"), "sent": size,
                "sent_sha": hashlib.sha256(payload).hexdigest(), "received": received,
                "received_sha": digest.hexdigest(), "sender_error": sender_error}
    """).lstrip().encode("utf-8")


def dedent(code):
    """Script text without the test file's indentation."""
    return textwrap.dedent(code).lstrip("\n")


def aws_field(server=None, endpoint=False, env=None, socket_path=None):
    """The header's aws field for a relay to server (or to socket_path)."""
    relay = None
    if server is not None or socket_path is not None:
        relay = {"socket": socket_path or server.path, "endpoint": endpoint}
    return {"env": dict(CREDENTIALS) if env is None else env, "relay": relay}


class AwsCase(unittest.TestCase):
    """Helpers: a fresh echo server, runs with the relay client module attached."""

    def server(self):
        """A Unix echo server, closed after the test."""
        server = harness.UnixEchoServer()
        self.addCleanup(server.close)
        return server

    def run_aws(self, script, aws, payload=None, timeout=120):
        """Run script with this aws field (None: no field at all); return the Run."""
        task_dir = harness.new_task_dir()
        self.addCleanup(harness.remove_task_dir, task_dir)
        extra = {} if aws is None else {"aws": aws}
        request = harness.build_request(task_dir, script=dedent(script), payload=payload,
                                        files=[("relayclient.py", RELAY_CLIENT)],
                                        header_extra=extra)
        run = harness.run_bootstrap(request, task_dir, unset=RELAY_VARIABLES + tuple(CREDENTIALS),
                                    timeout=timeout)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run

    def payload(self, run):
        """The payload of a successful run."""
        self.assertTrue(run.result["ok"], (run.result, run.stderr))
        return run.result["payload"]


ENV_SCRIPT = """
    import os, subprocess
    NAMES = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
             "HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy", "NO_PROXY", "no_proxy",
             "AWS_ENDPOINT_URL"]
    def handler(events, context):
        child = subprocess.run(["sh", "-c", "env"], stdout=subprocess.PIPE).stdout.decode()
        child_env = dict(line.split("=", 1) for line in child.splitlines() if "=" in line)
        return {"handler": {n: os.environ.get(n) for n in NAMES},
                "child": {n: child_env.get(n) for n in NAMES}}
    """


class Environment(AwsCase):
    """aws.env and the variables that point at the relay."""

    def test_without_aws_nothing_is_set(self):
        for aws in (None, {"env": {}, "relay": None}):
            with self.subTest(aws=aws):
                run = self.run_aws(ENV_SCRIPT, aws)
                got = self.payload(run)
                for where in ("handler", "child"):
                    self.assertEqual(set(got[where].values()), {None}, got)
        # null is the same as absent
        task_dir = harness.new_task_dir()
        self.addCleanup(harness.remove_task_dir, task_dir)
        request = harness.build_request(task_dir, script=dedent(ENV_SCRIPT),
                                        header_extra={"aws": None})
        run = harness.run_bootstrap(request, task_dir, unset=RELAY_VARIABLES)
        self.assertEqual(set(self.payload(run)["handler"].values()), {None})

    def test_env_reaches_handler_and_child_and_is_never_printed(self):
        env = dict(CREDENTIALS, AWS_REGION="eu-west-3")
        run = self.run_aws(ENV_SCRIPT, aws_field(env=env))
        got = self.payload(run)
        for where in ("handler", "child"):
            for name, value in env.items():
                self.assertEqual(got[where][name], value, (where, name))
            for name in RELAY_VARIABLES:
                self.assertIsNone(got[where][name], (where, name))  # no relay: no proxy
        for secret in (CREDENTIALS["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_SESSION_TOKEN"]):
            self.assertNotIn(secret, run.stdout_text)
            self.assertNotIn(secret, run.stderr)

    def test_relay_sets_proxy_and_no_proxy(self):
        server = self.server()
        run = self.run_aws(ENV_SCRIPT, aws_field(server, endpoint=False))
        got = self.payload(run)
        for where in ("handler", "child"):
            seen = got[where]
            url = seen["HTTPS_PROXY"]
            self.assertRegex(url, r"^http://127\.0\.0\.1:[0-9]+$")
            for name in ("HTTP_PROXY", "https_proxy", "http_proxy"):
                self.assertEqual(seen[name], url)
            self.assertEqual(seen["NO_PROXY"], "127.0.0.1,localhost")
            self.assertEqual(seen["no_proxy"], "127.0.0.1,localhost")
            self.assertIsNone(seen["AWS_ENDPOINT_URL"])  # endpoint false: real AWS via proxy
        self.assertEqual(run.stdout_text, "")
        self.assertEqual(run.stderr, "")

    def test_endpoint_sets_aws_endpoint_url_to_the_relay(self):
        server = self.server()
        run = self.run_aws(ENV_SCRIPT, aws_field(server, endpoint=True))
        got = self.payload(run)
        for where in ("handler", "child"):
            self.assertEqual(got[where]["AWS_ENDPOINT_URL"], got[where]["HTTPS_PROXY"])
            self.assertRegex(got[where]["AWS_ENDPOINT_URL"], r"^http://127\.0\.0\.1:[0-9]+$")


class RelayTraffic(AwsCase):
    """Bytes through the relay, as the Unix socket server saw them."""

    def test_small_exchange(self):
        server = self.server()
        run = self.run_aws("""
            import relayclient
            def handler(events, context):
                return relayclient.exchange(11)
            """, aws_field(server))
        got = self.payload(run)
        self.assertEqual(got["greeting"], "HELLO\n")
        self.assertEqual((got["received"], got["received_sha"]), (11, got["sent_sha"]))
        self.assertEqual(server.wait_records(1), [(11, got["sent_sha"])])

    def test_large_transfer_both_ways(self):
        server = self.server()
        size = 5 * 1024 * 1024 + 123
        run = self.run_aws("""
            import relayclient
            def handler(events, context):
                return relayclient.exchange(events["size"])
            """, aws_field(server), payload={"size": size})
        got = self.payload(run)
        self.assertEqual(got["sender_error"], [])
        self.assertEqual(got["greeting"], "HELLO\n")
        self.assertEqual(got["received"], size)
        self.assertEqual(got["received_sha"], got["sent_sha"])
        self.assertEqual(server.wait_records(1), [(size, got["sent_sha"])])

    def test_concurrent_connections(self):
        server = self.server()
        run = self.run_aws("""
            import threading, relayclient
            def handler(events, context):
                results = [None] * 12
                def one(i):
                    results[i] = relayclient.exchange(200000 + i * 7919, seed=str(i).encode())
                threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
                for t in threads: t.start()
                for t in threads: t.join(60)
                return results
            """, aws_field(server))
        got = self.payload(run)
        self.assertEqual(len(got), 12)
        for i, one in enumerate(got):
            self.assertEqual(one["greeting"], "HELLO\n")
            self.assertEqual(one["received"], 200000 + i * 7919)
            self.assertEqual(one["received_sha"], one["sent_sha"])
        records = server.wait_records(12)
        self.assertEqual(sorted(records), sorted((o["sent"], o["sent_sha"]) for o in got))

    def test_child_process_uses_the_relay(self):
        server = self.server()
        run = self.run_aws("""
            import json, subprocess, sys
            def handler(events, context):
                out = subprocess.run([sys.executable, "-c",
                                      "import json, relayclient; print(json.dumps(relayclient.exchange(70000)))"],
                                     stdout=subprocess.PIPE, check=True).stdout
                return json.loads(out.decode())
            """, aws_field(server))
        got = self.payload(run)
        self.assertEqual((got["greeting"], got["received"]), ("HELLO\n", 70000))
        self.assertEqual(server.wait_records(1), [(70000, got["sent_sha"])])

    def test_backpressure_bounds_what_is_in_flight(self):
        # The server stops reading: the handler's sends must block after a bounded amount
        # (socket buffers + the relay's 64 KiB), then everything arrives once it reads again.
        server = self.server()
        server.block_reading(seconds=6.0)
        run = self.run_aws("""
            import socket, time, relayclient, hashlib
            def handler(events, context):
                sock = relayclient.connect()
                sock.setblocking(False)
                block = b"b" * 65536
                sent, stalled_since = 0, None
                digest = hashlib.sha256()
                started = time.monotonic()
                while time.monotonic() - started < 20:
                    try:
                        n = sock.send(block)
                        digest.update(block[:n])
                        sent += n
                        stalled_since = None
                    except BlockingIOError:
                        if stalled_since is None:
                            stalled_since = time.monotonic()
                        elif time.monotonic() - stalled_since > 1.0:
                            break
                        time.sleep(0.01)
                cpu_before = time.process_time()
                time.sleep(1.0)  # the relay holds a full buffer: it must not spin meanwhile
                cpu_idle = time.process_time() - cpu_before
                stalled_at = time.monotonic() - started
                # The server reads again after 6 s: then all of it arrives, and comes back.
                sock.setblocking(True)
                sock.settimeout(30)
                sock.shutdown(socket.SHUT_WR)
                echoed = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    echoed += chunk
                return {"sent": sent, "sha": digest.hexdigest(), "cpu_idle": cpu_idle,
                        "stalled": stalled_since is not None, "stalled_at": stalled_at,
                        "greeting": echoed[:6].decode(), "echo_sha": hashlib.sha256(echoed[6:]).hexdigest()}
            """, aws_field(server))
        got = self.payload(run)
        self.assertTrue(got["stalled"], got)
        self.assertLess(got["stalled_at"], 5.5, got)  # measured while the server was not reading
        self.assertLess(got["sent"], 64 * 1024 * 1024, got)
        self.assertLess(got["cpu_idle"], 0.3, got)
        self.assertEqual(got["greeting"], "HELLO\n")
        self.assertEqual(got["echo_sha"], got["sha"])
        self.assertEqual(server.wait_records(1), [(got["sent"], got["sha"])])

    def test_after_the_handler_returns_the_result_still_comes(self):
        # Connections left open and a live relay thread: OutputChannel.finish still writes R.
        server = self.server()
        run = self.run_aws("""
            import relayclient
            KEEP = []
            def handler(events, context):
                for _ in range(5):
                    sock = relayclient.connect()
                    sock.sendall(b"open")
                    KEEP.append(sock)
                print("handler done")
                return "ok"
            """, aws_field(server))
        self.assertEqual(self.payload(run), "ok")
        self.assertEqual(run.stdout_text, "handler done\n")
        self.assertLess(run.seconds, 10)

    def test_connection_cap(self):
        server = self.server()
        run = self.run_aws("""
            import socket, time, relayclient
            def greeting(sock):
                sock.settimeout(10)
                try:
                    return relayclient.read_exactly(sock, 6).decode()
                except OSError as exc:
                    return "error " + type(exc).__name__
            def handler(events, context):
                held = [relayclient.connect() for _ in range(64)]
                greetings = [greeting(s) for s in held]
                extra = relayclient.connect()
                refused = greeting(extra)
                extra.close()
                held.pop().close()  # one slot frees once the relay sees the pair end
                later = ""
                for _ in range(100):
                    again = relayclient.connect()
                    later = greeting(again)
                    again.close()
                    if later == "HELLO\\n":
                        break
                    time.sleep(0.05)
                return {"ok": sum(g == "HELLO\\n" for g in greetings), "refused": refused,
                        "later": later}
            """, aws_field(server))
        got = self.payload(run)
        self.assertEqual(got["ok"], 64)
        self.assertIn(got["refused"], ("", "error ConnectionResetError"))
        self.assertEqual(got["later"], "HELLO\n")

    def test_missing_socket_closes_the_client(self):
        folder = harness.tempfile.mkdtemp(prefix="scriptbox-egress-")
        self.addCleanup(shutil.rmtree, folder, True)
        run = self.run_aws("""
            import time, relayclient
            def handler(events, context):
                started = time.monotonic()
                sock = relayclient.connect()
                sock.settimeout(10)
                try:
                    sock.sendall(b"GET / HTTP/1.1\\r\\n\\r\\n")
                    data = sock.recv(100)
                    outcome = "eof" if data == b"" else repr(data)
                except OSError as exc:
                    outcome = type(exc).__name__
                return {"outcome": outcome, "seconds": time.monotonic() - started}
            """, aws_field(socket_path=os.path.join(folder, "aws.sock")))
        got = self.payload(run)
        self.assertIn(got["outcome"], ("eof", "ConnectionResetError", "BrokenPipeError"))
        self.assertLess(got["seconds"], 5)
        self.assertEqual(run.stderr, "")


class Validation(AwsCase):
    """Each rule of the aws field, refused with a ProtocolError naming the field."""

    CASES = [
        ([], "aws must be null or an object"),
        ("x", "aws must be null or an object"),
        ({"env": {}, "relay": None, "extra": 1}, "aws: unknown key 'extra'"),
        ({"env": [], "relay": None}, "aws.env must be an object"),
        ({"env": {"AWS_K%d" % i: "v" for i in range(17)}, "relay": None},
         "aws.env has 17 entries (at most 16)"),
        ({"env": {"PATH": "/x"}, "relay": None}, "aws.env name 'PATH' does not match"),
        ({"env": {"aws_lower": "v"}, "relay": None}, "does not match"),
        ({"env": {"AWS_": "v"}, "relay": None}, "does not match"),
        ({"env": {"AWS_" + "A" * 65: "v"}, "relay": None}, "does not match"),
        ({"env": {"AWS_X\n": "v"}, "relay": None}, "does not match"),
        ({"env": {"AWS_X-Y": "v"}, "relay": None}, "does not match"),
        ({"env": {"AWS_X": 5}, "relay": None}, "aws.env.AWS_X must be a string"),
        ({"env": {"AWS_X": None}, "relay": None}, "aws.env.AWS_X must be a string"),
        ({"env": {"AWS_X": "v" * 8193}, "relay": None},
         "aws.env.AWS_X is longer than 8192 characters"),
        ({"env": {"AWS_X": "a\u0000b"}, "relay": None}, "aws.env.AWS_X holds NUL"),
        ({"env": {"AWS_X": "a\ud800b"}, "relay": None}, "aws.env.AWS_X holds NUL or a lone surrogate"),
        ({"env": None, "relay": None}, "aws.env must be an object"),
        ({"env": {"AWS_ÄX": "v"}, "relay": None}, "does not match"),
        ({"env": {}, "relay": "/run/x.sock"}, "aws.relay must be null or an object"),
        ({"env": {}, "relay": {"socket": "/run/x.sock", "endpoint": True, "x": 1}},
         "aws.relay: unknown key 'x'"),
        ({"env": {}, "relay": {"endpoint": True}}, "aws.relay.socket must be an absolute path"),
        ({"env": {}, "relay": {"socket": "run/x.sock", "endpoint": True}},
         "aws.relay.socket must be an absolute path"),
        ({"env": {}, "relay": {"socket": 5, "endpoint": True}},
         "aws.relay.socket must be an absolute path"),
        ({"env": {}, "relay": {"socket": "/run/\u0000x", "endpoint": True}},
         "aws.relay.socket holds NUL"),
        ({"env": {}, "relay": {"socket": "/run/\udc80", "endpoint": True}},
         "aws.relay.socket holds NUL or a lone surrogate"),
        ({"env": {}, "relay": {"socket": "/" + "s" * 100, "endpoint": True}},
         "aws.relay.socket is longer than 100 bytes"),
        ({"env": {}, "relay": {"socket": "/run/" + "\u00e9" * 48, "endpoint": True}},
         "aws.relay.socket is longer than 100 bytes"),
        ({"env": {}, "relay": {"socket": "/run/x.sock"}}, "aws.relay.endpoint must be true or"),
        ({"env": {}, "relay": {"socket": "/run/x.sock", "endpoint": 1}},
         "aws.relay.endpoint must be true or false"),
    ]

    def test_each_rule(self):
        for aws, fragment in self.CASES:
            with self.subTest(aws=repr(aws)[:80]):
                run = self.run_aws("def handler(e, c):\n    return 'ran'\n", aws)
                self.assertFalse(run.result["ok"], run.result)
                error = run.result["error"]
                self.assertEqual(error["type"], "ProtocolError", error)
                self.assertIn(fragment, error["message"])

    def test_values_are_never_quoted(self):
        secret = "s3cr3t-" + "q" * 8190
        run = self.run_aws("def handler(e, c):\n    return 'ran'\n",
                           {"env": {"AWS_SECRET_ACCESS_KEY": secret}, "relay": None})
        self.assertEqual(run.result["error"]["type"], "ProtocolError")
        self.assertNotIn("s3cr3t", json.dumps(run.result))

    def test_limits_themselves_are_allowed(self):
        env = {"AWS_K%02d" % i: "v" * 8192 for i in range(15)}
        env["AWS_" + "Z" * 64] = ""
        server = self.server()
        socket_path = server.path  # under /tmp: short; the 100-byte bound is tested above
        run = self.run_aws("""
            import os
            def handler(e, c):
                return sorted(k for k in os.environ if k.startswith("AWS_K") or k.startswith("AWS_ZZ"))
            """, {"env": env, "relay": {"socket": socket_path, "endpoint": False}})
        self.assertEqual(self.payload(run), sorted(env))


class OldBotocorePatch(unittest.TestCase):
    """patch_old_botocore against a stand-in botocore (the real ones run in Docker below)."""

    def test_positional_and_keyword_endpoint_url(self):
        folder = harness.tempfile.mkdtemp(prefix="scriptbox-fakebotocore-")
        self.addCleanup(shutil.rmtree, folder, True)
        os.makedirs(os.path.join(folder, "botocore"))
        with open(os.path.join(folder, "botocore", "__init__.py"), "w") as f:
            f.write("__version__ = '1.26.10'\n")
        with open(os.path.join(folder, "botocore", "session.py"), "w") as f:
            f.write(dedent("""
                class Model(object):
                    service_id = "Secrets Manager"
                class Session(object):
                    def get_service_model(self, service_name):
                        if service_name != "secretsmanager":
                            raise KeyError(service_name)
                        return Model()
                    def create_client(self, service_name, region_name=None, api_version=None,
                                      use_ssl=True, verify=None, endpoint_url=None,
                                      aws_access_key_id=None):
                        return (service_name, endpoint_url)
                """))
        code = dedent("""
            import json, os, sys
            sys.path.insert(0, sys.argv[1])
            import importlib.util
            spec = importlib.util.spec_from_file_location("b", sys.argv[2])
            b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
            os.environ["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9/"
            os.environ["AWS_ENDPOINT_URL_SECRETS_MANAGER"] = "http://127.0.0.1:8/"
            first = b.patch_old_botocore()
            second = b.patch_old_botocore()  # idempotent
            from botocore.session import Session
            s = Session()
            print(json.dumps([first, second,
                s.create_client("ec2"), s.create_client("ec2", "us-east-1"),
                s.create_client("ec2", "r", None, True, None, None),
                s.create_client("ec2", "r", None, True, None, "http://given/"),
                s.create_client(service_name="ec2", endpoint_url="http://given/"),
                s.create_client(service_name="ec2", endpoint_url=None),
                s.create_client("secrets-manager"), s.create_client("secretsmanager")]))
            """)
        out = subprocess.run([harness.PYTHON, "-c", code, folder, harness.BOOTSTRAP],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(out.returncode, 0, out.stderr)
        got = json.loads(out.stdout.decode())
        relay = "http://127.0.0.1:9/"
        self.assertEqual(got, [True, True, ["ec2", relay], ["ec2", relay], ["ec2", relay],
                               ["ec2", "http://given/"], ["ec2", "http://given/"],
                               ["ec2", relay], ["secrets-manager", "http://127.0.0.1:8/"],
                               ["secretsmanager", "http://127.0.0.1:8/"]])

    def test_new_botocore_is_left_alone(self):
        folder = harness.tempfile.mkdtemp(prefix="scriptbox-fakebotocore-")
        self.addCleanup(shutil.rmtree, folder, True)
        os.makedirs(os.path.join(folder, "botocore"))
        with open(os.path.join(folder, "botocore", "__init__.py"), "w") as f:
            f.write("__version__ = '1.34.162'\n")
        code = ("import sys; sys.path.insert(0, sys.argv[1]); import importlib.util; "
                "spec = importlib.util.spec_from_file_location('b', sys.argv[2]); "
                "b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b); "
                "print(b.patch_old_botocore(), 'botocore.session' in sys.modules)")
        out = subprocess.run([harness.PYTHON, "-c", code, folder, harness.BOOTSTRAP],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
        self.assertEqual(out.stdout.decode().split(), ["False", "False"], out.stderr)


FAKE_OLD_BOTOCORE = [
    ("botocore/__init__.py", b"__version__ = '1.20.0'\n"),
    ("botocore/session.py", dedent("""
        class Session(object):
            def create_client(self, service_name, region_name=None, api_version=None,
                              use_ssl=True, verify=None, endpoint_url=None):
                return endpoint_url
        """).encode()),
]


class CustomerFiles(AwsCase):
    """The task folder joins sys.path only after the relay runs; botocore is patched from it."""

    def run_with_zip(self, members, script, aws):
        """Run script with a lib.zip of members expanded into the task folder."""
        task_dir = harness.new_task_dir()
        self.addCleanup(harness.remove_task_dir, task_dir)
        request = harness.build_request(
            task_dir, script=dedent(script), zips=["lib.zip"], header_extra={"aws": aws},
            files=[("relayclient.py", RELAY_CLIENT), ("lib.zip", harness.build_zip(members))])
        run = harness.run_bootstrap(request, task_dir, unset=RELAY_VARIABLES)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run

    def test_customer_modules_do_not_shadow_the_relays(self):
        server = self.server()
        shadow = b"raise RuntimeError('customer module imported by the bootstrap')\n"
        run = self.run_with_zip([("selectors.py", shadow)], """
            import relayclient
            def handler(events, context):
                return relayclient.exchange(1000)
            """, aws_field(server))
        got = self.payload(run)
        self.assertEqual((got["greeting"], got["received"]), ("HELLO\n", 1000))

    def test_bundled_old_botocore_is_the_one_patched(self):
        server = self.server()
        run = self.run_with_zip(FAKE_OLD_BOTOCORE, """
            import os, botocore, botocore.session
            def handler(events, context):
                return {"file": botocore.__file__, "relay": os.environ["AWS_ENDPOINT_URL"],
                        "endpoint": botocore.session.Session().create_client("ec2")}
            """, aws_field(server, endpoint=True))
        got = self.payload(run)
        self.assertTrue(got["file"].startswith(run.task_dir + "/botocore/"), got)
        self.assertEqual(got["endpoint"], got["relay"])


class PowerShellStatic(unittest.TestCase):
    """The PowerShell bootstrap cannot run here (no pwsh, no PowerShell image): check that it
    carries the same field, rules and variables as the Python one."""

    RULES = ["aws must be null or an object with env and relay", "unknown key",
             "aws.env must be an object of names to strings", "entries (at most ",
             "does not match ^AWS_[A-Z0-9_]", "must be a string", "characters",
             "holds NUL or a lone surrogate", "aws.relay must be null or an object with socket and",
             "aws.relay.socket must be an absolute path", "aws.relay.socket holds NUL",
             "aws.relay.endpoint must be true or false", "cannot start the AWS relay"]

    def test_same_rules_and_variables(self):
        with open(os.path.join(harness.REPO, "images", "powershell", "bootstrap.ps1"),
                  encoding="utf-8") as f:
            ps1 = f.read()
        with open(harness.BOOTSTRAP, encoding="utf-8") as f:
            py = f.read()
        for rule in self.RULES:
            self.assertTrue(rule in py, "not in bootstrap.py: " + rule)
            self.assertTrue(rule in ps1, "not in bootstrap.ps1: " + rule)
        for needle in ("UnixDomainSocketEndPoint", "TcpListener", "[Environment]::SetEnvironmentVariable",
                       "'HTTPS_PROXY', 'HTTP_PROXY', 'https_proxy', 'http_proxy'", "'NO_PROXY'",
                       "'no_proxy'", "'AWS_ENDPOINT_URL'", "'127.0.0.1,localhost'", "CopyToAsync",
                       "Shutdown([System.Net.Sockets.SocketShutdown]::Send)", "$MaxAwsEnvEntries = 16",
                       "$MaxAwsEnvValueChars = 8192", "$MaxRelaySocketBytes = 100",
                       "$MaxRelayConnections = 64", "$RelayBufferBytes = 64KB",
                       "Initialize-AwsEgress $header.Aws", "NOT RUN"):
            self.assertTrue(needle in ps1, "not in bootstrap.ps1: " + needle)
        # The variables are set after the zips are expanded and before the script runs.
        self.assertLess(ps1.index("Expand-ZipAttachment $zipName"), ps1.index("Initialize-AwsEgress $header.Aws"))
        self.assertLess(ps1.index("Initialize-AwsEgress $header.Aws"), ps1.index("return Invoke-CustomerScript"))


DOCKER_SCRIPT = """
    import json, os, socket
    import boto3, botocore, botocore.session
    from botocore.config import Config
    import relayclient
    def handler(events, context):
        ec2 = boto3.client("ec2", region_name="us-east-1")
        sm = boto3.client("secretsmanager", region_name="us-east-1")
        given = boto3.client("s3", region_name="us-east-1", endpoint_url="http://127.0.0.1:7/")
        positional = botocore.session.get_session().create_client(
            "ec2", "us-east-1", None, True, None, None)
        seen = {"boto3": boto3.__version__, "botocore": botocore.__version__,
                "ec2": ec2.meta.endpoint_url, "secretsmanager": sm.meta.endpoint_url,
                "given": given.meta.endpoint_url, "positional": positional.meta.endpoint_url,
                "endpoint_env": os.environ.get("AWS_ENDPOINT_URL"),
                "key": os.environ.get("AWS_ACCESS_KEY_ID")}
        if events.get("http"):
            # A real call: through the relay to the test's HTTP stand-in (no retries).
            sts = boto3.client("sts", region_name="us-east-1",
                               config=Config(retries={"max_attempts": 0}, connect_timeout=5,
                                             read_timeout=10))
            seen["sts"] = sts.meta.endpoint_url
            try:
                seen["account"] = sts.get_caller_identity()["Account"]
            except Exception as exc:
                seen["error"] = type(exc).__name__
        else:
            seen["exchange"] = relayclient.exchange(300000)
        return seen
    """


class RuntimeImages(AwsCase):
    """The bootstrap of this repository in the runtime images, as scriptbox runs it (no
    network, read-only, uid 10001, the egress folder bind-mounted read-only)."""

    def run_in_image(self, image, server, endpoint, http=False):
        """Run DOCKER_SCRIPT in image; return the Run, or None (SKIPPED) without the image."""
        docker = shutil.which("docker")
        if docker is None:
            print("\nSKIPPED: docker is not installed", file=sys.stderr)
            return None
        probe = subprocess.run([docker, "image", "inspect", image], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, timeout=60)
        if probe.returncode != 0:
            print("\nSKIPPED: image {} is missing (or the Docker engine is not reachable)".format(
                image), file=sys.stderr)
            return None
        task_dir = harness.new_task_dir()
        env = dict(CREDENTIALS, AWS_ENDPOINT_URL_SECRETS_MANAGER="http://127.0.0.1:1/sm")
        aws = {"env": env, "relay": {"socket": "/run/scriptbox-egress/aws.sock",
                                     "endpoint": endpoint}}
        request = harness.build_request(task_dir, script=dedent(DOCKER_SCRIPT),
                                        files=[("relayclient.py", RELAY_CLIENT)],
                                        payload={"http": http}, header_extra={"aws": aws})
        command = [docker, "run", "-i", "--rm", "--network", "none", "--read-only",
                   "--tmpfs", "/tmp", "--user", "10001:10001", "--cap-drop", "ALL",
                   "--mount", "type=bind,source={},target=/run/scriptbox-egress,readonly".format(
                       server.folder),
                   "--mount", "type=bind,source={},target=/opt/scriptbox/bootstrap.py,"
                   "readonly".format(harness.BOOTSTRAP),
                   image, "python3", "/opt/scriptbox/bootstrap.py"]
        run = harness.run_bootstrap(request, task_dir, command=command, timeout=180)
        self.assertEqual(run.returncode, 0, run.stderr)
        return run

    def check_image(self, image, expected_botocore_prefix):
        """Emulator mode: every client without an endpoint_url goes to the relay; aws mode:
        none does (boto3 then uses HTTPS_PROXY); bytes pass the relay in both."""
        server = self.server()
        run = self.run_in_image(image, server, endpoint=True)
        if run is None:
            return
        got = self.payload(run)
        self.assertTrue(got["botocore"].startswith(expected_botocore_prefix), got)
        relay = got["endpoint_env"]
        self.assertRegex(relay, r"^http://127\.0\.0\.1:[0-9]+$")
        self.assertEqual(got["ec2"], relay)
        self.assertEqual(got["positional"], relay)
        # The per-service variable wins, named after the service id as botocore >= 1.31 does.
        self.assertEqual(got["secretsmanager"], "http://127.0.0.1:1/sm")
        self.assertEqual(got["given"], "http://127.0.0.1:7/")  # an explicit endpoint_url wins
        self.assertEqual(got["key"], CREDENTIALS["AWS_ACCESS_KEY_ID"])
        self.assertEqual(got["exchange"]["received_sha"], got["exchange"]["sent_sha"])
        self.assertEqual(got["exchange"]["greeting"], "HELLO\n")
        self.assertIn((300000, got["exchange"]["sent_sha"]), server.wait_records(1))
        run = self.run_in_image(image, server, endpoint=False)
        got = self.payload(run)
        self.assertIsNone(got["endpoint_env"])
        self.assertEqual(got["ec2"], "https://ec2.us-east-1.amazonaws.com")
        self.assertEqual(got["positional"], "https://ec2.us-east-1.amazonaws.com")

    def check_http(self, image):
        """A real STS call from boto3: in emulator mode it reaches the stand-in directly as plain
        HTTP (NO_PROXY: origin-form, not through the proxy) and the parsed answer comes back; in
        aws mode boto3 asks the relay for a CONNECT tunnel to the real STS host, which the
        stand-in refuses (403), as scriptbox refuses a host it does not allow."""
        server = harness.UnixHttpServer()
        self.addCleanup(server.close)
        run = self.run_in_image(image, server, endpoint=True, http=True)
        if run is None:
            return
        got = self.payload(run)
        self.assertEqual(got.get("account"), "210987654321", got)
        self.assertEqual(len(server.heads), 1, server.heads)
        head = server.heads[0].decode("utf-8", "replace")
        self.assertTrue(head.startswith("POST / HTTP/1.1\r\n"), head)
        self.assertIn("Host: " + got["endpoint_env"][len("http://"):], head)
        self.assertIn("AWS4-HMAC-SHA256 Credential=" + CREDENTIALS["AWS_ACCESS_KEY_ID"], head)
        self.assertIn("X-Amz-Security-Token: " + CREDENTIALS["AWS_SESSION_TOKEN"], head)
        run = self.run_in_image(image, server, endpoint=False, http=True)
        got = self.payload(run)
        self.assertNotIn("account", got)
        self.assertIn("error", got)
        self.assertEqual(got["sts"], "https://sts.amazonaws.com")
        self.assertEqual(len(server.heads), 2, server.heads)
        # http.client (under urllib3 and botocore) asks for the tunnel in HTTP/1.0, and boto3
        # of both ages uses STS's global endpoint for us-east-1: scriptbox must accept both.
        self.assertEqual(server.heads[1].split(b"\r\n")[0],
                         b"CONNECT sts.amazonaws.com:443 HTTP/1.0")

    def test_python36_old_botocore_is_patched(self):
        self.check_image("scriptbox-runtime:python3.6", "1.26.")

    def test_python36_boto3_calls_through_the_relay(self):
        self.check_http("scriptbox-runtime:python3.6")

    def test_python311_native_aws_endpoint_url(self):
        self.check_image("scriptbox-runtime:python3.11", "1.34.")

    def test_python311_boto3_calls_through_the_relay(self):
        self.check_http("scriptbox-runtime:python3.11")


if __name__ == "__main__":
    unittest.main()
