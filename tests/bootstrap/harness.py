"""Drive images/python/bootstrap.py the way scriptbox does, without Docker.

A request is a header line plus a ustar archive built with tarfile from (name, bytes) pairs; the
bootstrap runs as a subprocess with that request on stdin, and its stdout is split into frames.
The interpreter is sys.executable unless SCRIPTBOX_TEST_PYTHON names another one (the whole suite
can so be run under CPython 3.6 ... 3.13).
"""

import hashlib
import io
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import uuid
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOTSTRAP = os.path.join(REPO, "images", "python", "bootstrap.py")
PYTHON = os.environ.get("SCRIPTBOX_TEST_PYTHON") or sys.executable

DEFAULT_LIMITS = {"unzip_bytes": 256 * 1024 * 1024, "unzip_entries": 10000, "payload_items": 100}
DEFAULT_CONTEXT = {
    "automation:EXECUTION_ID": "4f5e1f0c-0000-4000-8000-000000000001",
    "global:ACCOUNT_ID": "123456789012",
    "global:REGION": "us-east-1",
    "global:AWS_PARTITION": "aws",
    "global:DATE": "2026-11-27",
    "global:DATE_TIME": "2026-11-27_12.30.05",
}


def new_task_dir():
    """A fresh task folder name in the protocol's form, unique per call."""
    return "/tmp/{}-{}".format(uuid.uuid4(), time.strftime("%Y-%m-%d-%H-%M-%S"))


def build_tar(files):
    """A ustar archive (bytes) of regular files from (name, bytes) pairs, or of TarInfo objects
    given as (TarInfo, bytes-or-None) pairs for hostile members. PAX format: plain ustar headers,
    plus a pax extended header only for a name that ustar cannot hold (over 100 bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in files:
            if isinstance(name, tarfile.TarInfo):
                info = name
            else:
                info = tarfile.TarInfo(name)
                info.mode = 0o644
            if data is not None:
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            else:
                archive.addfile(info)
    return buf.getvalue()


def build_zip(members):
    """A zip (bytes) from (name-or-ZipInfo, bytes) pairs, deflated."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            archive.writestr(name, data)
    return buf.getvalue()


def build_request(task_dir, files=(), script=None, function="handler", module="customer_script",
                  payload=None, context=None, zips=(), limits=None, header_extra=None,
                  archive=None):
    """The bytes scriptbox sends on stdin: header line, then the tar archive."""
    files = list(files)
    if script is not None:
        files.insert(0, ("customer_script.py", script.encode("utf-8")))
    if archive is None:
        archive = build_tar(files)
    header = {
        "v": 1,
        "task_dir": task_dir,
        "language": "python",
        "entry": {"module": module, "function": function},
        "payload": {} if payload is None else payload,
        "context": dict(DEFAULT_CONTEXT) if context is None else context,
        "zips": list(zips),
        "limits": dict(DEFAULT_LIMITS, **(limits or {})),
        "archive_bytes": len(archive),
    }
    header.update(header_extra or {})
    return json.dumps(header).encode("utf-8") + b"\n" + archive


def parse_frames(data):
    """Split stdout into (type, body) frames; raise AssertionError on trailing garbage."""
    frames = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise AssertionError("truncated frame header at byte {}: {!r}".format(pos, data[pos:]))
        kind = data[pos:pos + 1]
        (length,) = struct.unpack(">I", data[pos + 1:pos + 5])
        body = data[pos + 5:pos + 5 + length]
        if len(body) != length or kind not in (b"O", b"E", b"R"):
            raise AssertionError("bad frame at byte {}: {!r}".format(pos, data[pos:pos + 40]))
        frames.append((kind, body))
        pos += 5 + length
    return frames


class Run(object):
    """What one bootstrap run produced."""

    def __init__(self, result, output, stderr, returncode, frames, task_dir, seconds):
        """result: the R frame's JSON; output: bytes of all O frames; stderr: text."""
        self.result = result
        self.output = output
        self.stdout_text = output.decode("utf-8", "replace")
        self.stderr = stderr
        self.returncode = returncode
        self.frames = frames
        self.task_dir = task_dir
        self.seconds = seconds

    def __iter__(self):
        """Unpack as (result dict, stdout text from O frames, stderr text, exit code)."""
        return iter((self.result, self.stdout_text, self.stderr, self.returncode))

    @property
    def error(self):
        """The error object of a failed result (AssertionError when the step succeeded)."""
        assert self.result["ok"] is False, self.result
        return self.result["error"]


def run_bootstrap(request, task_dir, env=None, timeout=60, python=None, prefix=None, unset=(),
                  command=None):
    """Run the bootstrap with request on stdin; return a Run. Exactly one R frame, last.
    prefix: a command the bootstrap runs under (a PID namespace, another user); unset: names
    removed from the inherited environment; command: the whole command line instead (docker run
    ... IMAGE python3 /opt/scriptbox/bootstrap.py)."""
    child_env = dict(os.environ)
    child_env.pop("SCRIPTBOX_PREIMPORT", None)
    for name in unset:
        child_env.pop(name, None)
    child_env.update(env or {})
    started = time.monotonic()
    argv = command or list(prefix or []) + [python or PYTHON, BOOTSTRAP]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env,
                            cwd="/")
    try:
        stdout, stderr = proc.communicate(request, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    seconds = time.monotonic() - started
    frames = parse_frames(stdout)
    results = [body for kind, body in frames if kind == b"R"]
    assert len(results) == 1, "expected one R frame, got {}; stderr: {}".format(
        len(results), stderr.decode("utf-8", "replace"))
    assert frames[-1][0] == b"R", "the R frame is not the last one"
    output = b"".join(body for kind, body in frames if kind == b"O")
    # The handler's stderr arrives as E frames; the raw stderr holds only what the bootstrap
    # wrote before it took fd 2 over (an interpreter that cannot start, say).
    errors = b"".join(body for kind, body in frames if kind == b"E") + stderr
    return Run(json.loads(results[0].decode("utf-8")), output,
               errors.decode("utf-8", "replace"), proc.returncode, frames, task_dir, seconds)


def remove_task_dir(task_dir):
    """Delete a task folder left by a run (the container's tmpfs would vanish with it)."""
    if os.path.lexists(task_dir):
        shutil.rmtree(task_dir, ignore_errors=True)


def folder_bytes(path):
    """Sum of the sizes of the regular files under path."""
    total = 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            if os.path.isfile(full) and not os.path.islink(full):
                total += os.path.getsize(full)
    return total


class UnixEchoServer(object):
    """A stand-in for scriptbox's egress socket: a Unix socket server in a temp folder that
    greets each connection with GREETING, echoes every byte back, shuts its writing down after
    the client's EOF and records, per connection, how many bytes arrived and their SHA-256.
    With hold set, it stops reading (to test backpressure) until release() is called."""

    GREETING = b"HELLO\n"

    def __init__(self, name="aws.sock"):
        """Listen on <temp dir>/name (the folder 0755 and the socket 0666, so a container's
        uid can connect through a bind mount)."""
        self.folder = tempfile.mkdtemp(prefix="scriptbox-egress-")
        os.chmod(self.folder, 0o755)
        self.path = os.path.join(self.folder, name)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        os.chmod(self.path, 0o666)
        self.listener.listen(256)
        self.lock = threading.Lock()
        self.records = []  # (bytes received, sha256 hex) per finished connection
        self.accepted = 0
        self.hold = threading.Event()
        self.hold.set()  # set: reading allowed
        self.stopped = False
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()

    def _accept(self):
        """Serve each connection on a thread of its own."""
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        """Greet, echo until EOF, then half-close and record."""
        digest = hashlib.sha256()
        count = 0
        conn.settimeout(60)
        try:
            conn.sendall(self.GREETING)
            while True:
                self.hold.wait(60)
                data = conn.recv(65536)
                if not data:
                    break
                digest.update(data)
                count += len(data)
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)
            # Wait for the relay to close its end: the connection is over then.
            conn.recv(1)
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.records.append((count, digest.hexdigest()))

    def block_reading(self, seconds=None):
        """Stop reading from every connection until release() (or for this many seconds)."""
        self.hold.clear()
        if seconds is not None:
            timer = threading.Timer(seconds, self.release)
            timer.daemon = True
            timer.start()

    def release(self):
        """Read again."""
        self.hold.set()

    def wait_records(self, count, timeout=10.0):
        """The records once at least count connections have finished (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.records) >= count:
                    return list(self.records)
            time.sleep(0.02)
        with self.lock:
            return list(self.records)

    def close(self):
        """Stop listening and remove the folder."""
        self.hold.set()
        self.listener.close()
        shutil.rmtree(self.folder, ignore_errors=True)


STS_CALLER_IDENTITY = (
    b'<GetCallerIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
    b"<GetCallerIdentityResult><Arn>arn:aws:sts::210987654321:assumed-role/step/scriptbox</Arn>"
    b"<UserId>AROAEXAMPLE:scriptbox</UserId><Account>210987654321</Account>"
    b"</GetCallerIdentityResult><ResponseMetadata><RequestId>"
    b"01234567-89ab-cdef-0123-456789abcdef</RequestId></ResponseMetadata>"
    b"</GetCallerIdentityResponse>")


class UnixHttpServer(UnixEchoServer):
    """A stand-in for scriptbox's side of the egress socket at the HTTP level: records each
    request head; refuses a CONNECT with 403 (as scriptbox refuses a host it does not allow),
    answers anything else with an STS GetCallerIdentity response (as an emulator would)."""

    def __init__(self, name="aws.sock"):
        """Listen like UnixEchoServer; heads lists the request heads (bytes) in arrival order."""
        self.heads = []
        UnixEchoServer.__init__(self, name)

    def _serve(self, conn):
        """One request per connection, then close."""
        conn.settimeout(30)
        data = b""
        try:
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            with self.lock:
                self.heads.append(head)
            if head.startswith(b"CONNECT "):
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
                return
            length = 0
            for line in head.split(b"\r\n")[1:]:
                key, _, value = line.partition(b":")
                if key.strip().lower() == b"content-length":
                    length = int(value.strip())
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                body += chunk
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: "
                         + str(len(STS_CALLER_IDENTITY)).encode() + b"\r\nConnection: close\r\n\r\n"
                         + STS_CALLER_IDENTITY)
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.records.append((len(data), ""))
