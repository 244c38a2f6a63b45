#!/usr/bin/env python3
"""Prints, as JSON lines, the TCP sockets a process holds with their TCP_NODELAY setting.

Usage: sockopt.py PID. Each line: {"local": [host, port], "peer": [host, port], "nodelay": 0|1}.
It borrows each socket with pidfd_getfd (Linux 5.6+, needs ptrace rights over the process, as
root in the test machine has), so the setting is read from the very socket the process uses.
"""

import ctypes
import json
import os
import socket
import sys

SYS_PIDFD_GETFD = 438  # x86_64 and aarch64 alike


def main() -> None:
    pid = int(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{name}")
            except OSError:
                continue
            if not target.startswith("socket:"):
                continue
            fd = libc.syscall(SYS_PIDFD_GETFD, pidfd, int(name), 0)
            if fd < 0:
                continue
            sock = socket.socket(fileno=fd)
            try:
                if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
                    continue
                try:
                    peer = sock.getpeername()
                except OSError:
                    continue  # a listener
                nodelay = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
                print(json.dumps({"local": list(sock.getsockname()[:2]), "peer": list(peer[:2]), "nodelay": 1 if nodelay else 0}))
            finally:
                sock.close()
    finally:
        os.close(pidfd)


if __name__ == "__main__":
    main()
