"""Shared test machinery: ``cli``, the real ``python -m dpap_deploy`` without its start-up cost.

Most of a CLI call's time in the suite is the interpreter importing torch, Lava and the package
(2-3 s of CPU each, over a hundred calls). ``cli`` starts one server process that imports
``dpap_deploy.cli`` once; every call is a child forked from it, so each command still runs in its
own process with its own exit status, stdout and stderr (pipes, read to their end as
``subprocess.run`` reads them), working folder and environment, exactly as
``python -m dpap_deploy`` runs it (``runpy`` on ``dpap_deploy.__main__``, ``SystemExit`` turned
into the exit status the interpreter would give, exit handlers run). A call whose environment
differs in what is read at import (threads, paths, libraries) runs as a plain subprocess.
"""
from __future__ import annotations

import base64
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

# the modules dpap_deploy.cli imports inside its commands, and those of the ONNX and NIR
# exports and of the plots (Lava's are left to the commands that run it)
_PRELOAD = ("dpap_deploy.exporters", "dpap_deploy.dpap.rules", "dpap_deploy.data",
            "dpap_deploy.train_config", "dpap_deploy.pipeline", "dpap_deploy.exporters.nir_file",
            "dpap_deploy.data.saccade", "dpap_deploy.zoo", "dpap_deploy.convert",
            "dpap_deploy.exporters.onnx_export", "onnx", "onnxruntime", "torch.onnx",
            "dpap_deploy.exporters.nir_export", "nir", "h5py", "dpap_deploy.report.plots")
_SERVER = r"""
import atexit, base64, importlib, json, os, runpy, select, signal, sys, time, traceback
import dpap_deploy.cli
for name in sys.argv[1:]:       # what the commands import when they run, paid once here
    try:
        importlib.import_module(name)
    except Exception:           # the command that needs it fails the same way in its child
        pass
pending, jobs, fds, buf, reading = [], {}, {}, b"", True
replies = open(1, "wb", closefd=False)

def child(req, out, err):
    code = 1
    try:
        for fd in fds:                      # the other commands' pipes
            os.close(fd)
        os.dup2(os.open(req["stdin"], os.O_RDONLY), 0)
        os.dup2(out, 1)
        os.dup2(err, 2)
        os.close(out)
        os.close(err)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        try:
            if req["script"] is not None:   # python SCRIPT ARGV
                sys.argv = [req["script"], *req["argv"]]
                sys.path[0] = os.path.dirname(os.path.abspath(req["script"]))
                runpy.run_path(req["script"], run_name="__main__")
            elif req["code"] is None:       # python -m dpap_deploy ARGV
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

def finish(pid):
    # done once the command has exited and its stdout and stderr are closed, as for
    # subprocess.run (a process it started may hold them open)
    j = jobs[pid]
    if j["rc"] is False or j["open"]:
        return
    del jobs[pid]
    replies.write((json.dumps({
        "id": j["req"]["id"], "rc": None if j["killed"] else j["rc"],
        **{k: base64.b64encode(b"".join(j[k])).decode() for k in ("out", "err")}})
        + "\n").encode())
    replies.flush()

while reading or jobs:
    while pending and len(jobs) < pending[0]["jobs"]:
        req = pending.pop(0)
        (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(out_r)
            os.close(err_r)
            child(req, out_w, err_w)
        os.close(out_w)
        os.close(err_w)
        jobs[pid] = {"req": req, "deadline": time.monotonic() + req["timeout"], "rc": False,
                     "killed": False, "open": 2, "out": [], "err": []}
        fds[out_r], fds[err_r] = (pid, "out"), (pid, "err")
    ready, _, _ = select.select([0] * reading + list(fds), [], [], 0.02 if jobs else None)
    for fd in ready:
        if fd == 0:
            chunk = os.read(0, 1 << 16)
            reading = bool(chunk)
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                pending.append(json.loads(line))
            continue
        pid, key = fds[fd]
        data = os.read(fd, 1 << 16)
        if data:
            jobs[pid][key].append(data)
        else:
            os.close(fd)
            del fds[fd]
            jobs[pid]["open"] -= 1
            finish(pid)
    while any(j["rc"] is False for j in jobs.values()):
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            break
        jobs[pid]["rc"] = os.waitstatus_to_exitcode(status)
        finish(pid)
    now = time.monotonic()
    for pid, j in jobs.items():
        if j["rc"] is False and not j["killed"] and now > j["deadline"]:
            os.kill(pid, signal.SIGKILL)
            j["killed"] = True
"""


def _cmd(argv, code, script):
    how = [script] if script else ["-m", "dpap_deploy"] if code is None else ["-c", code]
    return [sys.executable, *how, *argv]


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
             code: str | None = None, script=None, jobs: int = 4):
        """``code``: run as ``python -c code *argv`` instead (an injected fault, then main);
        ``script``: as ``python script *argv``; ``jobs``: how many of ``argvs`` run at a
        time."""
        script = None if script is None else str(script)
        env = CLI_ENV if env is None else {k: str(v) for k, v in env.items()}
        argvs = [[str(a) for a in argv] for argv in argvs]
        keys = {k for k in {*env, *CLI_ENV} if k.startswith(_IMPORT_TIME)}
        if any(env.get(k) != CLI_ENV.get(k) for k in keys):
            return [self._plain(_cmd(a, code, script), cwd, env, timeout, input) for a in argvs]
        with self._lock:
            proc = self._server()
            reqs = {}
            for argv in argvs:
                self._n += 1
                stdin = Path(self._tmp.name) / f"{self._n}.in"
                stdin.write_text(input)
                reqs[self._n] = {"id": self._n, "argv": argv, "cwd": str(cwd), "env": env,
                                 "timeout": timeout, "code": code, "script": script, "jobs": jobs,
                                 "stdin": str(stdin)}
                proc.stdin.write((json.dumps(reqs[self._n]) + "\n").encode())
            proc.stdin.flush()
            got = {}
            while len(got) < len(reqs):
                line = proc.stdout.readline()
                assert line, "the CLI server stopped"
                msg = json.loads(line)
                got[msg["id"]] = msg
        done = []
        for i, req in reqs.items():
            os.unlink(req["stdin"])
            rc, out, err = got[i]["rc"], *(base64.b64decode(got[i][k]).decode(errors="replace")
                                           for k in ("out", "err"))
            if rc is None:
                rc, err = -1, err + f"still running after {timeout} s"
            done.append(subprocess.CompletedProcess(_cmd(req["argv"], code, script), rc, out,
                                                    err))
        return done

    @staticmethod
    def _plain(cmd, cwd, env, timeout, input):
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
