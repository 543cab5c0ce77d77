"""Run the emulator in the foreground: `python -m sandbox.kube --port 0 --kubeconfig /tmp/kubeconfig`.

Prints the base URL on the first line of stdout, so a parent process can read it.
"""

from __future__ import annotations

import argparse
import signal
import threading

from sandbox.kube import KubeEmulator


def main() -> None:
    parser = argparse.ArgumentParser(description="Kubernetes API emulator on loopback")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--kubernetes-version", default="1.33")
    parser.add_argument("--ready-delay", type=float, default=1.0)
    parser.add_argument("--kubeconfig", help="write a kubeconfig for the emulator here")
    args = parser.parse_args()

    emulator = KubeEmulator(kubernetes_version=args.kubernetes_version, ready_delay=args.ready_delay)
    print(emulator.start(args.host, args.port), flush=True)
    if args.kubeconfig:
        emulator.write_kubeconfig(args.kubeconfig)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    emulator.stop()


if __name__ == "__main__":
    main()
