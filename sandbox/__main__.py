"""`python -m sandbox up|down|status|serve`: the embedded local environment in the background.

`up` starts `serve` in its own process group and waits until it is ready (state file written);
`down` ends that process group and removes the state folder; `status` says what runs where.
Each sandbox lives in `.sandbox/<name>/`, so two can run at once on different names.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from remote_agents.spec import load_spec
from sandbox.environment import DEFAULT_SPEC, ROOT, Sandbox, SandboxSettings, _write_private

STATE_ROOT = Path(os.environ.get("REMOTE_AGENTS_SANDBOX_DIR", ROOT / ".sandbox"))
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0


def state_dir(name: str) -> Path:
    return STATE_ROOT / name


def read_state(name: str) -> dict[str, object] | None:
    path = state_dir(name) / "state.json"
    return json.loads(path.read_text()) if path.exists() else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def up(args: argparse.Namespace) -> int:
    state = read_state(args.name)
    if state and alive(int(state["pid"])):  # type: ignore[arg-type]
        print(f"sandbox '{args.name}' is already up; env file: {state_dir(args.name) / 'env'}")
        return 0
    shutil.rmtree(state_dir(args.name), ignore_errors=True)
    state_dir(args.name).mkdir(parents=True)
    started = time.monotonic()
    log = open(state_dir(args.name) / "serve.log", "wb")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", "--name", args.name, "--spec", str(args.spec),
         "--ready-delay", str(args.ready_delay), "--eks-cluster-delay", str(args.eks_cluster_delay),
         "--eks-nodegroup-delay", str(args.eks_nodegroup_delay)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    while time.monotonic() - started < READY_TIMEOUT:
        if read_state(args.name):
            print(f"sandbox '{args.name}' up in {time.monotonic() - started:.1f} s")
            print(f"  source {state_dir(args.name) / 'env'}")
            return 0
        if child.poll() is not None:
            break
        time.sleep(0.1)
    child.kill()
    print((state_dir(args.name) / "serve.log").read_text(), file=sys.stderr)
    print(f"sandbox '{args.name}' did not come up", file=sys.stderr)
    return 1


def down(args: argparse.Namespace) -> int:
    state = read_state(args.name)
    if state is None:
        print(f"sandbox '{args.name}' is not running")
        shutil.rmtree(state_dir(args.name), ignore_errors=True)
        return 0
    pid = int(state["pid"])  # type: ignore[arg-type]
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_TIMEOUT
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(pid):
        os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(state_dir(args.name), ignore_errors=True)
    print(f"sandbox '{args.name}' is down")
    return 0


def status(args: argparse.Namespace) -> int:
    state = read_state(args.name)
    if state is None or not alive(int(state["pid"])):  # type: ignore[arg-type]
        print(f"sandbox '{args.name}' is not running")
        return 1
    for part, path in (("aws", "/sandbox/info"), ("kubernetes", "/version"), ("astro", "/sandbox/state")):
        url = str(state[part])
        base = url.removesuffix("/v1")
        try:
            code = httpx.get(base + path, timeout=2).status_code
        except httpx.HTTPError as error:
            code = f"unreachable ({error})"  # type: ignore[assignment]
        print(f"{part:<11} {url}  {code}")
    print(f"env file    {state_dir(args.name) / 'env'}")
    return 0


def serve(args: argparse.Namespace) -> int:
    settings = SandboxSettings(args.ready_delay, args.eks_cluster_delay, args.eks_nodegroup_delay)
    sandbox = Sandbox(state_dir(args.name), load_spec(args.spec), settings).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sandbox.write_env_file(state_dir(args.name) / "env")
    _write_private(state_dir(args.name) / "state.json", json.dumps(sandbox.describe(), indent=2))
    stop.wait()
    sandbox.stop()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, handler in (("up", up), ("down", down), ("status", status), ("serve", serve)):
        command = commands.add_parser(name)
        command.set_defaults(handler=handler)
        command.add_argument("--name", default="default", help="run several sandboxes side by side")
        if name in ("up", "serve"):
            command.add_argument("--spec", type=Path, default=DEFAULT_SPEC)
            command.add_argument("--ready-delay", type=float, default=SandboxSettings.ready_delay)
            command.add_argument("--eks-cluster-delay", type=float, default=0.0)
            command.add_argument("--eks-nodegroup-delay", type=float, default=0.0)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
