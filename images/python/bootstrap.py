# -*- coding: utf-8 -*-
"""scriptbox bootstrap for Python runtimes (protocol version 1, see docs/protocol.md).

Runs as ``python3 /opt/scriptbox/bootstrap.py`` inside a fresh, hardened container:

1. keeps the container's real stdout to itself and points fd 1 at a pipe whose content a pump
   thread turns into ``O`` frames, so nothing the handler (or a child) prints can corrupt a frame;
2. imports the modules named in ``SCRIPTBOX_PREIMPORT`` (warm pool: the interpreter waits here);
3. reads the request from stdin (one JSON header line, then ``archive_bytes`` of ustar), checks
   every field and every archive member, writes the files into the task folder and expands the
   zips listed in ``zips`` with the checks of the protocol;
4. applies the optional ``aws`` field: its variables go into the environment and, with a
   relay, a daemon thread relays connections to 127.0.0.1:PORT to the egress Unix socket, with
   the proxy variables (and for an emulator AWS_ENDPOINT_URL) pointing at it;
5. imports ``entry.module`` from the task folder and calls ``entry.function(payload, context)``;
6. ends every other process of the sandbox (they could otherwise write a frame of their own
   before the result), drains what the handler wrote, writes exactly one ``R`` frame with the
   JSON result and exits 0 with ``os._exit``.

It must run unchanged on CPython 3.6 through 3.13 and uses the standard library only:
check with ``vermin -t=3.6- --violations --no-tips images/python/bootstrap.py``.
"""

import importlib
import io
import json
import linecache  # noqa: F401 -- loaded now so a customer file named linecache.py cannot shadow it
import os
import re
import signal
import stat
import struct
import sys
import tarfile
import threading
import time
import tokenize  # noqa: F401 -- used by linecache; loaded before the task folder joins sys.path
import traceback
import zipfile

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024
# After the handler returns, how long the pump may keep draining the pipe. Background children
# can hold the pipe's write end forever, so the pump is not waited for without a bound.
PUMP_DRAIN_SECONDS = 0.2
# How long the bootstrap keeps ending the sandbox's other processes before it writes the result
# anyway (SIGKILL cannot be caught; this only bounds a process stuck in the kernel).
END_PROCESSES_SECONDS = 1.0
# The uid the host never runs the sandbox as: the bootstrap never signals processes as root.
ROOT_UID = 0
# The container inits the bootstrap may run under as their child (Docker's `Init: true` is tini,
# installed as docker-init). A host's init (systemd...) is none of these.
CONTAINER_INITS = ("docker-init", "tini", "tini-static", "catatonit", "podman-init", "dumb-init")
# Bounds on what an error report may carry, so that a RecursionError (about a thousand frames)
# or a huge exception text cannot make the result frame itself too big for the host.
MAX_FRAMES = 100
MAX_TEXT_CHARS = 16 * 1024
MAX_NAME_COMPONENT_BYTES = 255
MAX_NAME_BYTES = 1024

TASK_DIR_RE = re.compile(
    r"/tmp/[0-9a-f-]{36}-[0-9]{4}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}-[0-9]{2}")
FRAME_OUTPUT = b"O"
FRAME_ERROR = b"E"
FRAME_RESULT = b"R"
# O_NOFOLLOW and O_EXCL: never write through a link, never overwrite; O_CLOEXEC: children of
# the handler must not inherit the bootstrap's descriptors.
NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class StepFailure(Exception):
    """A failure to report in the result frame: error type, message and customer frames."""

    def __init__(self, type_name, message, frames=None):
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message
        self.frames = frames or []


def protocol_error(message):
    """Build the failure for a bad header or archive."""
    return StepFailure("ProtocolError", message)


def attachment_error(zip_name, member, rule):
    """Build the failure for a zip member that breaks a rule, naming the zip and the member."""
    return StepFailure("AttachmentError",
                       "zip {!r}, member {!r}: {}".format(zip_name, member, rule))


# ---------------------------------------------------------------------------------------------
# Output channel: the private stdout, the pipe behind fd 1 and the pump thread
# ---------------------------------------------------------------------------------------------

def write_all(fd, data):
    """Write every byte of data to fd (os.write may write less than asked)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def frame(kind, body):
    """Encode one frame: type byte, big-endian u32 body length, body."""
    return kind + struct.pack(">I", len(body)) + body


class OutputChannel(object):
    """Owns the container's real stdout; what is written to fd 1 becomes O frames and what is
    written to fd 2 becomes E frames, so the host sees the handler's output and the result on
    one ordered stream: when the R frame arrives, every earlier line has arrived too."""

    def __init__(self):
        """Save the real stdout privately, put pipes on fds 1 and 2 and start the pumps."""
        # os.dup gives a non-inheritable descriptor (PEP 446); said again explicitly because
        # a child process holding the real stdout could write fake frames or keep it open.
        self.real_stdout = os.dup(1)
        os.set_inheritable(self.real_stdout, False)
        self.lock = threading.Lock()  # one frame at a time on the real stdout
        self.closed = False  # set once the R frame is being written: no O/E frame after it
        self.broken = False  # the host stopped reading: keep draining, stop writing
        self.pumps = []
        for fd, kind in ((1, FRAME_OUTPUT), (2, FRAME_ERROR)):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)  # stays inheritable: child processes write into the pipe
            os.close(write_end)
            pump = threading.Thread(target=self._pump, args=(read_end, kind),
                                    name="scriptbox-pump-{}".format(fd))
            pump.daemon = True
            pump.start()
            self.pumps.append(pump)
        rebind_std_streams()

    def _pump(self, read_end, kind):
        """Turn what arrives on one pipe into frames until EOF or until the R frame."""
        while True:
            try:
                chunk = os.read(read_end, CHUNK)
            except OSError:
                return
            if not chunk:
                return
            with self.lock:
                if self.closed:
                    return
                if self.broken:
                    continue
                try:
                    write_all(self.real_stdout, frame(kind, chunk))
                except OSError:
                    self.broken = True

    def finish(self, body, main_pid):
        """Flush the handler's output, end every other process, write the single R frame and
        exit 0."""
        flush_std_streams()
        if os.getpid() != main_pid:
            # A child forked by the handler that returned through the bootstrap: it must not
            # write a second R frame.
            os._exit(0)
        # Drop our own write ends of the pipes so the pumps see EOF once no child holds them.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        # A child of the handler inherits the real stdout (fork keeps every descriptor) and
        # could write a result frame of its own before ours: the first R frame is the result,
        # so nothing but the bootstrap may be left when it is written. The dead children's
        # pipe ends close with them, so the pumps then reach EOF after what is already queued.
        try:
            if may_end_other_processes(os.getpid(), os.getppid(), os.geteuid(), init_name()):
                end_other_processes(END_PROCESSES_SECONDS)
        except Exception:  # best effort: the result must still be written
            pass
        drain_until = time.time() + PUMP_DRAIN_SECONDS
        for pump in self.pumps:
            pump.join(max(0.0, drain_until - time.time()))
        with self.lock:
            self.closed = True
            try:
                write_all(self.real_stdout, frame(FRAME_RESULT, body))
            except OSError:
                pass  # nobody is listening; the host reports the missing result itself
        os._exit(0)  # no atexit handlers, no thread joins: nothing can hang after the result


def init_name():
    """The program name of PID 1 ('docker-init' in a scriptbox container), or '' if unreadable."""
    try:
        with open("/proc/1/cmdline", "rb") as handle:
            argv0 = handle.read().split(b"\0")[0]
    except OSError:
        return ""
    return os.path.basename(argv0).decode("utf-8", "replace")


def may_end_other_processes(pid, ppid, euid, init):
    """True only where ending "every other process" means the sandbox's own: the bootstrap is
    the init of its own PID namespace, or the only child of a container init (Docker's
    `Init: true`), and runs as a non-root user. Run anywhere else (tests on a host, under a
    host's init, a debugging session) it must never signal processes that are not its own."""
    if euid == ROOT_UID:
        return False
    if pid == 1:
        return True
    return ppid == 1 and init in CONTAINER_INITS


def live_process_ids(own_pid):
    """PIDs in /proc other than init and own_pid that are not yet dead (zombies cannot write)."""
    pids = []
    try:
        names = os.listdir("/proc")
    except OSError:
        return pids
    for name in names:
        if not name.isdigit():
            continue
        pid = int(name)
        if pid in (1, own_pid):
            continue
        try:
            with open("/proc/{}/stat".format(pid), "rb") as handle:
                stat_line = handle.read()
        except OSError:
            continue  # gone meanwhile
        # The command name (field 2) may hold spaces and ')': the state follows the last ')'.
        state = stat_line[stat_line.rfind(b")") + 1:].split()[:1]
        if state and state[0] not in (b"Z", b"X"):
            pids.append(pid)
    return pids


def reap_children():
    """Collect our own dead children, so they leave the process table."""
    while True:
        try:
            pid, _status = os.waitpid(-1, os.WNOHANG)
        except OSError:  # ECHILD: none left
            return
        if pid == 0:
            return


def end_other_processes(bound_seconds):
    """SIGKILL every process of the sandbox but init and this one, until none is left alive
    or bound_seconds pass; return the PIDs still alive (normally none)."""
    own_pid = os.getpid()
    deadline = time.time() + bound_seconds
    while True:
        try:
            # kill(-1) reaches every process we may signal but init and ourselves, in one call
            # that a fork cannot race (a forking parent with a pending SIGKILL does not fork).
            os.kill(-1, signal.SIGKILL)
        except OSError:  # ESRCH: nobody else is left
            pass
        reap_children()
        alive = live_process_ids(own_pid)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if not alive or time.time() >= deadline:
            return alive
        time.sleep(0.005)


def rebind_std_streams():
    """Give Python code a UTF-8 stdout on the pipe and a UTF-8 stderr that never fail to encode."""
    # backslashreplace: handlers print strings holding surrogates (undecodable file names...).
    sys.stdout = io.open(1, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                         closefd=False)
    sys.stderr = io.open(2, "w", buffering=1, encoding="utf-8", errors="backslashreplace",
                         closefd=False)


def flush_std_streams():
    """Flush every Python-level stdout/stderr the handler may have written to."""
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except Exception:  # a handler may have replaced or closed them
            pass


def preimport(names):
    """Import the comma-separated modules of SCRIPTBOX_PREIMPORT, ignoring those that fail."""
    for name in names.split(","):
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except Exception:  # ImportError mostly; a warm interpreter must not die over a module
            pass


# ---------------------------------------------------------------------------------------------
# Request: header and archive
# ---------------------------------------------------------------------------------------------

def reject_constant(name):
    """json.loads hook: NaN and Infinity are not JSON."""
    raise ValueError("non-standard JSON constant " + name)


def is_count(value):
    """True for a non-negative int (bool excluded)."""
    return type(value) is int and value >= 0


def read_header(stdin):
    """Read and parse the header line (at most 4 MiB of JSON, then a newline)."""
    line = stdin.readline(MAX_HEADER_BYTES + 1)
    if not line.endswith(b"\n"):
        if len(line) > MAX_HEADER_BYTES:
            raise protocol_error("header line over {} bytes".format(MAX_HEADER_BYTES))
        raise protocol_error("header line missing or not terminated by a newline")
    try:
        header = json.loads(line[:-1].decode("utf-8"), parse_constant=reject_constant)
    except RecursionError:
        raise protocol_error("header is nested too deeply")
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise protocol_error("header is not a UTF-8 JSON object: {}".format(exc))
    return validate_header(header)


def validate_header(header):
    """Check every header field the bootstrap uses; return the header."""
    if not isinstance(header, dict):
        raise protocol_error("header is not a JSON object")
    if header.get("v") != PROTOCOL_VERSION or type(header.get("v")) is not int:
        raise protocol_error("unsupported protocol version {!r} (expected {})".format(
            header.get("v"), PROTOCOL_VERSION))
    task_dir = header.get("task_dir")
    if not isinstance(task_dir, str) or not TASK_DIR_RE.fullmatch(task_dir):
        raise protocol_error("task_dir {!r} is not /tmp/<uuid>-<yyyy-mm-dd-HH-MM-SS>".format(
            task_dir))
    if header.get("language") != "python":
        raise protocol_error("language {!r} is not python".format(header.get("language")))
    entry = header.get("entry")
    if not isinstance(entry, dict):
        raise protocol_error("entry must be an object with module and function")
    module, function = entry.get("module"), entry.get("function")
    if not isinstance(module, str) or not all(p.isidentifier() for p in module.split(".")):
        raise protocol_error("entry.module {!r} is not a dotted module name".format(module))
    if not isinstance(function, str) or not function or "\0" in function:
        raise protocol_error("entry.function {!r} is not a name".format(function))
    if "payload" not in header:
        raise protocol_error("payload is missing")
    if not isinstance(header.get("context"), dict):
        raise protocol_error("context must be an object")
    zips = header.get("zips", [])
    if not isinstance(zips, list) or not all(isinstance(z, str) for z in zips):
        raise protocol_error("zips must be a list of names")
    if len(set(zips)) != len(zips):
        raise protocol_error("zips lists a name twice")
    limits = header.get("limits")
    if not isinstance(limits, dict):
        raise protocol_error("limits must be an object")
    for key in ("unzip_bytes", "unzip_entries", "payload_items"):
        if not is_count(limits.get(key)):
            raise protocol_error("limits.{} must be a non-negative integer".format(key))
    if not is_count(header.get("archive_bytes")):
        raise protocol_error("archive_bytes must be a non-negative integer")
    header["zips"] = zips
    header["aws"] = validate_aws(header.get("aws"))
    return header


class BoundedReader(object):
    """A read-only file object giving exactly `size` bytes of the underlying stream, then EOF."""

    def __init__(self, raw, size):
        """Wrap raw, allowing `size` bytes to be read from it."""
        self.raw = raw
        self.remaining = size

    def read(self, n=-1):
        """Read up to n bytes (all that remain when n < 0)."""
        if n is None or n < 0 or n > self.remaining:
            n = self.remaining
        if n == 0:
            return b""
        data = self.raw.read(n)
        self.remaining -= len(data)
        return data

    def drain(self):
        """Consume what is left; return how many bytes were missing (the stream ended early)."""
        while self.remaining:
            if not self.read(CHUNK):
                break
        return self.remaining


def check_plain_name(name):
    """Return why an archive member name is not a plain file name, or None when it is."""
    if not name or name in (".", ".."):
        return "not a plain file name"
    if "/" in name or "\0" in name:
        return "name holds '/' or NUL"
    if len(name.encode("utf-8")) > MAX_NAME_COMPONENT_BYTES:
        return "name longer than {} bytes".format(MAX_NAME_COMPONENT_BYTES)
    return None


def write_new_file(path, chunks, on_chunk=None):
    """Create path (never existing, never through a link), mode 0644, from an iterable of bytes."""
    fd = os.open(path, NEW_FILE_FLAGS, 0o644)
    try:
        os.fchmod(fd, 0o644)  # exactly 0644 whatever the umask
        for chunk in chunks:
            if on_chunk is not None:
                on_chunk(len(chunk))
            write_all(fd, chunk)
    finally:
        os.close(fd)


def read_chunks(fileobj):
    """Yield a file object's content in CHUNK-sized pieces."""
    while True:
        chunk = fileobj.read(CHUNK)
        if not chunk:
            return
        yield chunk


def write_archive(stdin, task_dir, size):
    """Read `size` bytes of ustar from stdin and write its regular files into task_dir."""
    written = set()
    reader = BoundedReader(stdin, size)
    if size:
        try:
            # Streaming mode ("r|"): members are checked and written one by one, so the archive is
            # never held in memory; utf-8/strict so names do not depend on the container's locale.
            archive = tarfile.open(fileobj=reader, mode="r|", encoding="utf-8", errors="strict")
            for member in archive:
                name = member.name
                if member.type not in (tarfile.REGTYPE, tarfile.AREGTYPE):
                    raise protocol_error("archive member {!r} is not a regular file".format(name))
                problem = check_plain_name(name)
                if problem:
                    raise protocol_error("archive member {!r}: {}".format(name, problem))
                if name in written:
                    raise protocol_error("archive member {!r} appears twice".format(name))
                source = archive.extractfile(member)
                path = os.path.join(task_dir, name).encode("utf-8")
                try:
                    write_new_file(path, read_chunks(source))
                except OSError as exc:
                    raise protocol_error("cannot write archive member {!r}: {}".format(name, exc))
                written.add(name)
        except (tarfile.TarError, EOFError, UnicodeError) as exc:
            raise protocol_error("archive is not a valid ustar stream: {}".format(exc))
    missing = reader.drain()
    if missing:
        raise protocol_error("archive truncated: {} of {} bytes missing".format(missing, size))
    return written


# ---------------------------------------------------------------------------------------------
# Zip attachments
# ---------------------------------------------------------------------------------------------

class ZipBudget(object):
    """Bytes and entries still allowed for all the zips of one request (counted while writing)."""

    def __init__(self, max_bytes, max_entries):
        """Start with the limits of the header."""
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.bytes = 0
        self.entries = 0


def check_zip_member_name(name):
    """Return (components, is_dir) of a zip member name, or raise ValueError naming the rule."""
    if "\0" in name:
        raise ValueError("name holds NUL")
    if "\\" in name:
        raise ValueError("name holds a backslash")
    if name.startswith("/"):
        raise ValueError("absolute path")
    if len(name.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValueError("name longer than {} bytes".format(MAX_NAME_BYTES))
    is_dir = name.endswith("/")
    components = (name[:-1] if is_dir else name).split("/")
    for component in components:
        if component == "..":
            raise ValueError("path has a '..' component")
        if component in ("", "."):
            raise ValueError("path has an empty or '.' component")
        if len(component.encode("utf-8")) > MAX_NAME_COMPONENT_BYTES:
            raise ValueError("path component longer than {} bytes".format(
                MAX_NAME_COMPONENT_BYTES))
    return components, is_dir


def check_zip_member_type(info, is_dir):
    """Refuse links, devices and other special entries (Unix type bits in external_attr)."""
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if file_type == 0:
        return  # no Unix mode recorded (e.g. made on Windows): the trailing '/' decides
    if file_type == stat.S_IFLNK:
        raise ValueError("symbolic links are refused")
    if file_type not in (stat.S_IFREG, stat.S_IFDIR):
        raise ValueError("special files (devices, fifos, sockets) are refused")
    if (file_type == stat.S_IFDIR) != is_dir:
        raise ValueError("entry type does not match its name")


class Extractor(object):
    """Writes files into the task folder, remembering every name already written."""

    def __init__(self, task_dir, archive_names, budget):
        """Start from the files written from the archive."""
        self.task_dir = task_dir
        self.files = set(archive_names)
        self.dirs = set()
        self.budget = budget

    def path(self, relative):
        """The byte path of a relative name inside the task folder."""
        return (self.task_dir + "/" + relative).encode("utf-8")

    def make_dirs(self, components):
        """Create each missing directory of a relative path (mode 0755)."""
        for depth in range(1, len(components) + 1):
            relative = "/".join(components[:depth])
            if relative in self.dirs:
                continue
            if relative in self.files:
                raise ValueError("{!r} is already a file".format(relative))
            os.mkdir(self.path(relative), 0o755)
            os.chmod(self.path(relative), 0o755)  # whatever the umask
            self.dirs.add(relative)

    def count_bytes(self, count):
        """Add bytes about to be written; refuse them past limits.unzip_bytes."""
        if self.budget.bytes + count > self.budget.max_bytes:
            raise ValueError("expanded size over limits.unzip_bytes ({} bytes)".format(
                self.budget.max_bytes))
        self.budget.bytes += count

    def expand(self, zip_name):
        """Expand one zip attachment into the task folder with every check of the protocol."""
        try:
            handle = open(self.path(zip_name), "rb")
        except OSError as exc:
            raise attachment_error(zip_name, "", "cannot open: {}".format(exc))
        with handle:
            try:
                archive = zipfile.ZipFile(handle)
            except Exception as exc:  # BadZipFile, but also struct/OSError on crafted headers
                raise attachment_error(zip_name, "", "not a valid zip file: {}".format(exc))
            with archive:
                for info in archive.infolist():
                    # orig_filename: ZipInfo silently cuts the name at a NUL byte.
                    member = info.orig_filename
                    try:
                        self.expand_member(archive, info, member)
                    except StepFailure:
                        raise
                    except Exception as exc:  # the rule broken, or zipfile's own complaint
                        raise attachment_error(zip_name, member, str(exc) or type(exc).__name__)

    def expand_member(self, archive, info, member):
        """Check one zip member and create it (directory or regular file)."""
        self.budget.entries += 1
        if self.budget.entries > self.budget.max_entries:
            raise ValueError("more than limits.unzip_entries ({}) entries".format(
                self.budget.max_entries))
        components, is_dir = check_zip_member_name(member)
        check_zip_member_type(info, is_dir)
        relative = "/".join(components)
        if relative in self.files:
            raise ValueError("a file of that name was already written")
        if is_dir:
            self.make_dirs(components)  # an existing directory is fine (zips list their dirs)
            return
        if relative in self.dirs:
            raise ValueError("a directory of that name was already written")
        self.make_dirs(components[:-1])
        with archive.open(info) as source:
            # Bytes are counted as they are decompressed, not from the zip's headers (which lie
            # in a zip bomb); a chunk over the limit is never written.
            write_new_file(self.path(relative), read_chunks(source), self.count_bytes)
        self.files.add(relative)


# ---------------------------------------------------------------------------------------------
# AWS egress: the header's `aws` field (credentials, the relay to the egress socket)
# ---------------------------------------------------------------------------------------------

AWS_KEYS = ("env", "relay")
RELAY_KEYS = ("socket", "endpoint")
AWS_ENV_NAME_RE = re.compile(r"AWS_[A-Z0-9_]{1,64}")
MAX_AWS_ENV_ENTRIES = 16
MAX_AWS_ENV_VALUE_CHARS = 8192
MAX_RELAY_SOCKET_BYTES = 100  # sun_path holds 108 bytes with its NUL; scriptbox's path is short
RELAY_BUFFER_BYTES = 64 * 1024  # per direction: a full buffer stops reading the side feeding it
MAX_RELAY_CONNECTIONS = 64
RELAY_BACKLOG = 128
RELAY_HOST = "127.0.0.1"
PROXY_VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
NO_PROXY_VALUE = "127.0.0.1,localhost"
# botocore honours AWS_ENDPOINT_URL from 1.31 on; older ones get a small patch of create_client.
BOTOCORE_NATIVE_ENDPOINT_URL = (1, 31)


def check_unknown_keys(value, allowed, field):
    """Refuse keys of an object other than the allowed ones, naming the first one found."""
    for key in value:
        if key not in allowed:
            raise protocol_error("{}: unknown key {!r} (allowed: {})".format(
                field, key, ", ".join(allowed)))


def encodes_as_utf8(text):
    """True when text holds no lone surrogate (JSON can carry them, the environment cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validate_aws_env(env):
    """Check aws.env: at most 16 AWS_* names with bounded NUL-free string values. The values
    are credentials: no message ever quotes one."""
    if not isinstance(env, dict):
        raise protocol_error("aws.env must be an object of names to strings")
    if len(env) > MAX_AWS_ENV_ENTRIES:
        raise protocol_error("aws.env has {} entries (at most {})".format(
            len(env), MAX_AWS_ENV_ENTRIES))
    for name, value in env.items():
        if not AWS_ENV_NAME_RE.fullmatch(name):
            raise protocol_error("aws.env name {!r} does not match ^AWS_[A-Z0-9_]{{1,64}}$".format(
                name[:100]))
        if not isinstance(value, str):
            raise protocol_error("aws.env.{} must be a string".format(name))
        if len(value) > MAX_AWS_ENV_VALUE_CHARS:
            raise protocol_error("aws.env.{} is longer than {} characters".format(
                name, MAX_AWS_ENV_VALUE_CHARS))
        if "\0" in value or not encodes_as_utf8(value):
            raise protocol_error("aws.env.{} holds NUL or a lone surrogate".format(name))


def validate_aws_relay(relay):
    """Check aws.relay: null, or {socket: absolute path of at most 100 bytes, endpoint: bool}."""
    if relay is None:
        return
    if not isinstance(relay, dict):
        raise protocol_error("aws.relay must be null or an object with socket and endpoint")
    check_unknown_keys(relay, RELAY_KEYS, "aws.relay")
    path = relay.get("socket")
    if not isinstance(path, str) or not path.startswith("/"):
        raise protocol_error("aws.relay.socket must be an absolute path")
    if "\0" in path or not encodes_as_utf8(path):
        raise protocol_error("aws.relay.socket holds NUL or a lone surrogate")
    if len(path.encode("utf-8")) > MAX_RELAY_SOCKET_BYTES:
        raise protocol_error("aws.relay.socket is longer than {} bytes".format(
            MAX_RELAY_SOCKET_BYTES))
    if type(relay.get("endpoint")) is not bool:
        raise protocol_error("aws.relay.endpoint must be true or false")


def validate_aws(aws):
    """Check the optional `aws` field; return it with both keys present (env {}, relay None)
    or None when it is absent or null."""
    if aws is None:
        return None
    if not isinstance(aws, dict):
        raise protocol_error("aws must be null or an object with env and relay")
    check_unknown_keys(aws, AWS_KEYS, "aws")
    env = aws.get("env", {})
    validate_aws_env(env)
    relay = aws.get("relay")
    validate_aws_relay(relay)
    return {"env": env, "relay": relay}


class RelaySide(object):
    """One socket of a relayed connection and the bytes waiting to be written to it."""

    def __init__(self, sock):
        """Wrap a non-blocking socket."""
        self.sock = sock
        self.pending = bytearray()  # read from the other side, not yet written here
        self.eof = False  # this side will send nothing more
        self.shut = False  # writing here is shut down (after the other side's EOF, flushed)
        self.mask = 0  # events registered with the selector
        self.peer = None
        self.pair = None


class RelayPair(object):
    """A relayed connection: the handler's TCP client and its Unix socket upstream."""

    def __init__(self, client, upstream):
        """Link the two sides."""
        self.client = RelaySide(client)
        self.upstream = RelaySide(upstream)
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.client.pair = self.upstream.pair = self
        self.closed = False


class Relay(object):
    """Listens on 127.0.0.1 and relays each connection to the egress Unix socket, in one
    selectors loop on one daemon thread. Not a security boundary (scriptbox enforces the rules
    on the socket's other side); it only must not hang, spin or print."""

    def __init__(self, socket_path):
        """Bind the listener (port 0: the kernel picks a free one)."""
        import selectors
        import socket
        self.socket_module = socket
        self.socket_path = socket_path
        self.selector = selectors.DefaultSelector()
        self.read_event, self.write_event = selectors.EVENT_READ, selectors.EVENT_WRITE
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind((RELAY_HOST, 0))
        self.listener.listen(RELAY_BACKLOG)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.pairs = set()
        self.selector.register(self.listener, self.read_event, None)

    def start(self):
        """Run the loop on a daemon thread: it dies with the process (os._exit after R)."""
        thread = threading.Thread(target=self.run, name="scriptbox-aws-relay")
        thread.daemon = True
        thread.start()
        return thread

    def run(self):
        """The event loop; it never lets an exception out (a traceback would reach stderr)."""
        while True:
            try:
                self.step()
            except BaseException:  # a bug here: keep relaying, without spinning
                time.sleep(0.05)

    def step(self):
        """Wait for events and handle them once."""
        for key, mask in self.selector.select():
            if key.data is None:
                self.accept()
                continue
            side = key.data
            try:
                if mask & self.read_event and not side.pair.closed:
                    self.read(side)
                if mask & self.write_event and not side.pair.closed:
                    self.write(side)
            except OSError:  # reset, broken pipe: the connection is over
                self.close(side.pair)
            if not side.pair.closed:
                self.update(side.pair)

    def accept(self):
        """Accept every waiting client; each gets its own upstream connection or is closed."""
        while True:
            try:
                client, _address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and the like: let the loop breathe instead of spinning
                time.sleep(0.05)
                return
            if len(self.pairs) >= MAX_RELAY_CONNECTIONS:
                client.close()
                continue
            upstream = self.connect_upstream()
            if upstream is None:
                client.close()
                continue
            client.setblocking(False)
            pair = RelayPair(client, upstream)
            self.pairs.add(pair)
            self.update(pair)

    def connect_upstream(self):
        """A connected non-blocking Unix socket to the egress socket, or None."""
        sock = self.socket_module.socket(self.socket_module.AF_UNIX, self.socket_module.SOCK_STREAM)
        try:
            # A Unix socket connects at once or fails at once (EAGAIN when its backlog is full):
            # a short timeout bounds the rare case where the kernel would block.
            sock.settimeout(1.0)
            sock.connect(self.socket_path)
            sock.setblocking(False)
        except OSError:
            sock.close()
            return None
        return sock

    def read(self, side):
        """Move what side has to send into its peer's pending buffer (never past the cap)."""
        room = RELAY_BUFFER_BYTES - len(side.peer.pending)
        if room <= 0:
            return
        try:
            data = side.sock.recv(min(room, CHUNK))
        except (BlockingIOError, InterruptedError):
            return
        if data:
            side.peer.pending += data
            self.write(side.peer)  # most often it goes straight through
        else:
            side.eof = True
            self.write(side.peer)  # flushes what is left, then shuts the peer's writing down

    def write(self, side):
        """Write side's pending bytes; once its peer is at EOF and all is written, shut down."""
        if side.pending and not side.shut:
            try:
                sent = side.sock.send(side.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            del side.pending[:sent]
        if side.peer.eof and not side.pending and not side.shut:
            side.shut = True
            side.sock.shutdown(self.socket_module.SHUT_WR)

    def update(self, pair):
        """Register each side for what it can do now; close the pair once both ways are done."""
        if pair.client.shut and pair.upstream.shut:
            self.close(pair)
            return
        for side in (pair.client, pair.upstream):
            mask = 0
            if not side.eof and len(side.peer.pending) < RELAY_BUFFER_BYTES:
                mask |= self.read_event
            if side.pending and not side.shut:
                mask |= self.write_event
            if mask == side.mask:
                continue
            if side.mask == 0:
                self.selector.register(side.sock, mask, side)
            elif mask == 0:
                self.selector.unregister(side.sock)
            else:
                self.selector.modify(side.sock, mask, side)
            side.mask = mask

    def close(self, pair):
        """Close both sockets of a pair (idempotent)."""
        if pair.closed:
            return
        pair.closed = True
        self.pairs.discard(pair)
        for side in (pair.client, pair.upstream):
            if side.mask:
                try:
                    self.selector.unregister(side.sock)
                except (KeyError, ValueError):
                    pass
                side.mask = 0
            side.sock.close()


def apply_aws_env(env):
    """Put the step's AWS variables (credentials, region...) into os.environ, for the handler
    and its children. Never printed."""
    for name, value in env.items():
        os.environ[name] = value


def start_relay(relay):
    """Start the relay to relay.socket; point the proxy variables (and, for an emulator,
    AWS_ENDPOINT_URL) at it. Return the relay's URL."""
    try:
        listener = Relay(relay["socket"])
    except OSError as exc:
        raise StepFailure("BootstrapError", "cannot start the AWS relay on {}: {}".format(
            RELAY_HOST, exc))
    listener.start()
    url = "http://{}:{}".format(RELAY_HOST, listener.port)
    for name in PROXY_VARIABLES:
        os.environ[name] = url
    # The endpoint below is the relay itself: reached directly, never through the proxy.
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = NO_PROXY_VALUE
    if relay["endpoint"]:
        os.environ["AWS_ENDPOINT_URL"] = url
    return url


def version_tuple(text):
    """The leading numeric parts of a version string ("1.26.10" -> (1, 26, 10))."""
    parts = []
    for part in str(text).split("."):
        match = re.match(r"[0-9]+", part)
        if not match:
            break
        parts.append(int(match.group(0)))
        if match.end() != len(part):
            break
    return tuple(parts)


def endpoint_from_environment(session, service_name):
    """AWS_ENDPOINT_URL_<SERVICE>, else AWS_ENDPOINT_URL, as botocore >= 1.31 picks it. SERVICE
    is the service id as botocore >= 1.31 spells it ("Secrets Manager" -> SECRETS_MANAGER),
    else the service name upper-cased with '-' as '_' (the model is looked at only when some
    AWS_ENDPOINT_URL_* variable exists; create_client loads it next anyway, cached)."""
    if any(name.startswith("AWS_ENDPOINT_URL_") for name in os.environ):
        suffixes = []
        try:
            service_id = session.get_service_model(service_name).service_id
            suffixes.append(str(service_id).upper().replace(" ", "_"))
        except Exception:  # an unknown service: create_client will say so itself
            pass
        suffixes.append(str(service_name).upper().replace("-", "_"))
        for suffix in suffixes:
            url = os.environ.get("AWS_ENDPOINT_URL_" + suffix)
            if url:
                return url
    return os.environ.get("AWS_ENDPOINT_URL")


def patch_old_botocore():
    """botocore before 1.31 ignores AWS_ENDPOINT_URL: make Session.create_client use it when
    the caller gives no endpoint_url. Return True when the patch was applied. Any failure
    leaves botocore as it was (the handler then sees the real AWS endpoints refused)."""
    # No standard module is imported here: the task folder is first on sys.path by now (so that
    # a botocore bundled in the customer's zip is the one patched) and could shadow it.
    try:
        import botocore
        if version_tuple(getattr(botocore, "__version__", "")) >= BOTOCORE_NATIVE_ENDPOINT_URL:
            return False
        import botocore.session
        session_class = botocore.session.Session
        original = session_class.create_client
        if getattr(original, "scriptbox_endpoint_patch", False):
            return True  # patched already (a second request in one interpreter)
        code = original.__code__
        names = list(code.co_varnames[:code.co_argcount])  # self, service_name, ...
        if "endpoint_url" not in names or "service_name" not in names:
            return False
    except Exception:  # ImportError (no botocore) or an unexpected shape: leave it alone
        return False
    # Positions among the arguments after self.
    url_index, service_index = names.index("endpoint_url") - 1, names.index("service_name") - 1

    def create_client(self, *args, **kwargs):
        """Session.create_client, with endpoint_url from the environment when none is given."""
        given = args[url_index] if len(args) > url_index else kwargs.get("endpoint_url")
        if given is None:
            service = args[service_index] if len(args) > service_index else kwargs.get(
                "service_name")
            url = endpoint_from_environment(self, service)
            if url:
                if len(args) > url_index:
                    args = args[:url_index] + (url,) + args[url_index + 1:]
                else:
                    kwargs["endpoint_url"] = url
        return original(self, *args, **kwargs)

    create_client.scriptbox_endpoint_patch = True
    create_client.__wrapped__ = original
    session_class.create_client = create_client
    return True


def setup_aws(aws):
    """Apply the header's `aws` field (variables, relay); return True when an emulator
    endpoint is set, so old botocore needs patch_old_botocore once sys.path is the handler's.
    Runs before the task folder joins sys.path: its files cannot shadow socket or selectors."""
    if aws is None:
        return False
    apply_aws_env(aws["env"])
    relay = aws["relay"]
    if relay is None:
        return False
    start_relay(relay)
    return relay["endpoint"]


# ---------------------------------------------------------------------------------------------
# Running the handler
# ---------------------------------------------------------------------------------------------

def clip_text(text):
    """Bound an error text and make it encodable as UTF-8 (lone surrogates become escapes)."""
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS] + "... (truncated)"
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def safe_str(value):
    """str() that cannot raise (a hostile __str__ must not break the report)."""
    try:
        return str(value)
    except BaseException:
        return "<unprintable {} object>".format(type(value).__name__)


def customer_frames(tb, task_dir):
    """The traceback's frames inside the task folder, outermost first, as dicts."""
    prefix = task_dir + os.sep
    frames = []
    for summary in traceback.extract_tb(tb):
        if summary.filename.startswith(prefix):
            frames.append({"file": summary.filename, "line": summary.lineno,
                           "function": summary.name, "code": summary.line or ""})
    if len(frames) > MAX_FRAMES:
        # Keep both ends, like the head and tail of a deep recursion's traceback.
        half = MAX_FRAMES // 2
        frames = frames[:half] + frames[-half:]
    return frames


def exception_message(exc):
    """The message AWS shows after 'Type - ': str(exc), or the exit code of a SystemExit."""
    if isinstance(exc, SystemExit):
        return safe_str(exc.code)
    return safe_str(exc)


def failure_from_exception(exc, task_dir, type_name=None, message=None):
    """Describe a caught exception with only the customer's frames."""
    frames = customer_frames(exc.__traceback__, task_dir)
    if isinstance(exc, SyntaxError) and exc.filename and exc.filename.startswith(task_dir + "/"):
        # A SyntaxError is raised by the compiler, so the customer's line is not a frame.
        frames.append({"file": exc.filename, "line": exc.lineno or 0, "function": "<module>",
                       "code": (exc.text or "").strip()})
    return StepFailure(type_name or type(exc).__name__,
                       message if message is not None else exception_message(exc), frames)


def load_handler(module_name, function_name, task_dir):
    """Import the customer's module and return its handler function."""
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # SyntaxError, a failing import, even SystemExit at top level
        # The real exception type (SyntaxError, ModuleNotFoundError, KeyError...), as AWS shows it.
        raise failure_from_exception(
            exc, task_dir, type(exc).__name__,
            "Unable to import module {!r}: {}".format(module_name, exception_message(exc)))
    function = getattr(module, function_name, None)
    if function is None:
        raise StepFailure("HandlerNotFound", "Handler {!r} not found in module {!r}".format(
            function_name, module_name))
    if not callable(function):
        raise StepFailure("HandlerNotFound", "Handler {!r} in module {!r} is not callable".format(
            function_name, module_name))
    return function


def encode_payload(value, max_items, task_dir):
    """JSON-encode the handler's return value; return the R frame body (bytes)."""
    original_items = None
    if isinstance(value, (list, tuple)) and len(value) > max_items:
        original_items = len(value)
        value = list(value[:max_items])
    try:
        # allow_nan=False: NaN/Infinity are not JSON, the step fails with the encoder's message.
        text = json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
        payload = text.encode("utf-8")  # strict: a lone surrogate in a string fails here
    except BaseException as exc:  # TypeError, ValueError, RecursionError, UnicodeEncodeError...
        raise failure_from_exception(exc, task_dir)
    body = b'{"ok":true,"payload":' + payload
    if original_items is not None:
        body += b',"payload_items":' + str(original_items).encode("ascii")
    return body + b"}"


def failure_body(failure):
    """The R frame body (bytes) of a failed step."""
    frames = [{"file": clip_text(f["file"]), "line": f["line"], "function": clip_text(f["function"]),
               "code": clip_text(f["code"])} for f in failure.frames]
    error = {"type": clip_text(failure.type_name), "message": clip_text(failure.message),
             "frames": frames}
    return json.dumps({"ok": False, "error": error}, ensure_ascii=False).encode("utf-8")


def redirect_stdin_to_devnull():
    """After the request, the handler and its children read EOF, not the container's stdin."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def run_request(stdin):
    """Read the request, prepare the task folder, run the handler; return the R frame body."""
    header = read_header(stdin)
    task_dir = header["task_dir"]
    try:
        os.mkdir(task_dir, 0o700)
    except OSError as exc:
        raise protocol_error("cannot create task_dir: {}".format(exc))
    archive_names = write_archive(stdin, task_dir, header["archive_bytes"])
    limits = header["limits"]
    extractor = Extractor(task_dir, archive_names,
                          ZipBudget(limits["unzip_bytes"], limits["unzip_entries"]))
    for zip_name in header["zips"]:
        if zip_name not in archive_names:
            raise protocol_error("zips names {!r}, which is not in the archive".format(zip_name))
        extractor.expand(zip_name)
    redirect_stdin_to_devnull()
    # Credentials and the relay: after the request is read, before the customer's code runs.
    emulator = setup_aws(header["aws"])

    os.chdir(task_dir)
    here = os.path.dirname(os.path.abspath(__file__))
    # The bootstrap's own folder is not the customer's business; the task folder comes first.
    sys.path[:] = [task_dir] + [p for p in sys.path if p and os.path.abspath(p) != here]
    sys.dont_write_bytecode = True  # one run only: no __pycache__ in the task folder
    if emulator:
        # Old botocore is patched from the handler's sys.path: the botocore it will import.
        patch_old_botocore()
    entry = header["entry"]
    handler = load_handler(entry["module"], entry["function"], task_dir)
    try:
        result = handler(header["payload"], header["context"])
    except BaseException as exc:  # SystemExit, KeyboardInterrupt and RecursionError included
        raise failure_from_exception(exc, task_dir)
    return encode_payload(result, limits["payload_items"], task_dir)


def main():
    """Run one request and exit 0 after the single R frame."""
    main_pid = os.getpid()
    channel = OutputChannel()
    preimport(os.environ.pop("SCRIPTBOX_PREIMPORT", ""))
    # Our own buffered reader on fd 0: its read-ahead never reaches the handler's sys.stdin.
    stdin = io.open(0, "rb", buffering=CHUNK, closefd=False)
    try:
        body = run_request(stdin)
    except StepFailure as failure:
        body = failure_body(failure)
    except BaseException as exc:  # a bug of the bootstrap itself: still answer with a result
        body = failure_body(StepFailure(
            "BootstrapError", "scriptbox bootstrap failed: {}: {}".format(
                type(exc).__name__, safe_str(exc))))
    channel.finish(body, main_pid)


if __name__ == "__main__":
    main()
