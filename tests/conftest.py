"""Shared test machinery: ``cli``, the real ``python -m dpap_deploy`` without its start-up cost.

Most of a CLI call's time in the suite is the interpreter importing torch, Lava and the package
(2-3 s of CPU each, over a hundred calls). ``cli`` starts one server process that imports
``dpap_deploy.cli`` once; every call is a child forked from it, so each command still runs in its
own process with its own exit status, stdout, stderr, working folder and environment, exactly as
``python -m dpap_deploy`` runs it (``runpy`` on ``dpap_deploy.__main__``, ``SystemExit`` turned
into the exit status the interpreter would give, exit handlers run). A call whose environment
differs in what is read at import (threads, paths, libraries) runs as a plain subprocess.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CLI_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
_IMPORT_TIME = ("OMP_", "MKL_", "KMP_", "OPENBLAS", "PYTHON", "TORCH", "LD_", "CUDA", "HOME",
                "XDG_", "TMP")

# the modules dpap_deploy.cli imports inside its commands
_PRELOAD = ("dpap_deploy.exporters", "dpap_deploy.dpap.rules", "dpap_deploy.data",
            "dpap_deploy.train_config", "dpap_deploy.pipeline", "dpap_deploy.exporters.nir_file",
            "dpap_deploy.data.saccade", "dpap_deploy.zoo", "dpap_deploy.convert")
_SERVER = r"""
import atexit, json, os, runpy, select, signal, sys, time, traceback
import importlib
import dpap_deploy.cli
for name in sys.argv[1:]:       # what the commands import when they run, paid once here
    try:
        importlib.import_module(name)
    except Exception:           # the command that needs it fails the same way in its child
        pass
pending, running, buf = [], {}, b""

def child(req):
    code = 1
    try:
        for fd, path, flags in ((0, req["stdin"], os.O_RDONLY),
                                (1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                                (2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)):
            os.dup2(os.open(path, flags, 0o600), fd)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        try:
            if req["code"] is None:         # python -m dpap_deploy ARGV
                sys.argv = ["-m", *req["argv"]]
                runpy.run_module("dpap_deploy", run_name="__main__", alter_sys=True)
            else:                           # python -c CODE ARGV
                sys.argv = ["-c", *req["argv"]]
                exec(compile(req["code"], "<string>", "exec"), {"__name__": "__main__"})
            code = 0
        except SystemExit as e:
            if e.code is None or isinstance(e.code, int):
                code = e.code or 0
            else:
                print(e.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        atexit._run_exitfuncs()
    finally:
        for s in (sys.stdout, sys.stderr):
            try:
                s.flush()
            except BaseException:
                pass
        os._exit(code & 0xFF)

def reply(req, rc):
    os.write(1, (json.dumps({"id": req["id"], "rc": rc}) + "\n").encode())

while True:
    while pending and len(running) < pending[0]["jobs"]:
        req = pending.pop(0)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            child(req)
        running[pid] = (req, time.monotonic() + req["timeout"])
    r, _, _ = select.select([0], [], [], 0.02 if running else None)
    if r:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            pending.append(json.loads(line))
    while running:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        req, deadline = running.pop(pid)
        reply(req, None if deadline is None else os.waitstatus_to_exitcode(status))
    now = time.monotonic()
    for pid, (req, deadline) in list(running.items()):
        if deadline is not None and now > deadline:
            os.kill(pid, signal.SIGKILL)
            running[pid] = (req, None)
for pid in running:
    os.kill(pid, signal.SIGKILL)
"""


def _cmd(argv, code):
    return [sys.executable, *(["-m", "dpap_deploy"] if code is None else ["-c", code]), *argv]


class Cli:
    """``cli(argv)`` / ``cli.many([argv, ...])``: ``subprocess.CompletedProcess`` objects (text),
    as ``subprocess.run([sys.executable, "-m", "dpap_deploy", *argv], capture_output=True,
    text=True, cwd=ROOT, env=CLI_ENV)`` would give them. A call still running after ``timeout``
    seconds is killed and comes back with exit status -1 and that said on stderr."""

    def __init__(self):
        self._proc = None
        self._lock = threading.Lock()
        self._tmp = tempfile.TemporaryDirectory(prefix="dpap-cli-")
        self._n = 0

    def _server(self):
        if self._proc is None or self._proc.poll() is not None:
            self._proc = subprocess.Popen([sys.executable, "-c", _SERVER, *_PRELOAD],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          cwd=ROOT, env=CLI_ENV)
        return self._proc

    def __call__(self, argv, **kw) -> subprocess.CompletedProcess:
        return self.many([argv], **kw)[0]

    def many(self, argvs, *, cwd=ROOT, env=None, timeout: float = 300, input: str = "",
             code: str | None = None, jobs: int = 4):
        """``code``: run as ``python -c code *argv`` instead (an injected fault, then main);
        ``jobs``: how many of ``argvs`` run at a time."""
        env = CLI_ENV if env is None else {k: str(v) for k, v in env.items()}
        argvs = [[str(a) for a in argv] for argv in argvs]
        keys = {k for k in {*env, *CLI_ENV} if k.startswith(_IMPORT_TIME)}
        if any(env.get(k) != CLI_ENV.get(k) for k in keys):
            return [self._plain(a, cwd, env, timeout, input, code) for a in argvs]
        with self._lock:
            proc = self._server()
            reqs = {}
            for argv in argvs:
                self._n += 1
                base = Path(self._tmp.name) / str(self._n)
                Path(f"{base}.in").write_text(input)
                reqs[self._n] = {"id": self._n, "argv": argv, "cwd": str(cwd), "env": env,
                                 "timeout": timeout, "code": code, "jobs": jobs, "stdin": f"{base}.in", "out": f"{base}.out",
                                 "err": f"{base}.err"}
                proc.stdin.write((json.dumps(reqs[self._n]) + "\n").encode())
            proc.stdin.flush()
            rcs = {}
            while len(rcs) < len(reqs):
                line = proc.stdout.readline()
                assert line, "the CLI server stopped"
                msg = json.loads(line)
                rcs[msg["id"]] = msg["rc"]
        done = []
        for i, req in reqs.items():
            out, err = (Path(req[k]).read_text(errors="replace") for k in ("out", "err"))
            for k in ("stdin", "out", "err"):
                os.unlink(req[k])
            if rcs[i] is None:
                rcs[i], err = -1, err + f"still running after {timeout} s"
            done.append(subprocess.CompletedProcess(_cmd(req["argv"], code), rcs[i], out, err))
        return done

    @staticmethod
    def _plain(argv, cwd, env, timeout, input, code):
        cmd = _cmd(argv, code)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=env,
                                  timeout=timeout, input=input)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, -1, "", f"still running after {timeout} s")

    def close(self):
        if self._proc is not None:
            self._proc.stdin.close()
            self._proc.wait(timeout=60)
            self._proc.stdout.close()
        self._tmp.cleanup()


_RUNNER: Cli | None = None


def shared_cli() -> Cli:
    """The session's one ``Cli`` (also for helpers that are not fixtures)."""
    global _RUNNER
    if _RUNNER is None:
        _RUNNER = Cli()
    return _RUNNER


@pytest.fixture(scope="session")
def cli() -> Cli:
    return shared_cli()


def pytest_sessionfinish(session, exitstatus):
    if _RUNNER is not None:
        _RUNNER.close()
