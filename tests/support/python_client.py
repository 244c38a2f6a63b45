"""A SignalR client in Python (PyPI `signalrcore`), driven line by line by the Node tests.

usage: python_client.py URL TRANSPORT PROTOCOL
  TRANSPORT: websockets | sse | longpolling;  PROTOCOL: json | messagepack

Reads one JSON command per line on stdin and writes one JSON event per line on stdout:
  {"op": "on", "method": M}                  -> every call of M: {"event": "call", "method", "args"}
  {"op": "invoke", "id": N, "method", "args"} -> {"event": "completion", "id", "result"}
                                                 or {"event": "error", "id", "error"}
  {"op": "stop"}                             -> {"event": "closed"}, then exits
Once connected it writes {"event": "open"}; if the connection ends on its own, {"event": "closed"}.
"""

import json
import socket
import sys
import threading

from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.json_hub_protocol import JsonHubProtocol
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol
from signalrcore.types import HttpTransportType

TRANSPORTS = {
    "websockets": HttpTransportType.web_sockets,
    "sse": HttpTransportType.server_sent_events,
    "longpolling": HttpTransportType.long_polling,
}
PROTOCOLS = {"json": JsonHubProtocol, "messagepack": MessagePackHubProtocol}

out_lock = threading.Lock()


def emit(event):
    with out_lock:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()


def main():
    url, transport, protocol = sys.argv[1:4]
    connection = (
        HubConnectionBuilder()
        .with_url(url, options={"transport": TRANSPORTS[transport]})
        .with_hub_protocol(PROTOCOLS[protocol]())
        .build()
    )
    opened = threading.Event()
    stopping = threading.Event()
    connection.on_open(opened.set)
    connection.on_close(lambda: stopping.is_set() or emit({"event": "closed"}))
    # The error callback gets the failed invocation's completion.
    connection.on_error(
        lambda m: emit({"event": "error", "id": getattr(m, "invocation_id", None), "error": getattr(m, "error", str(m))})
    )
    connection.start()
    if not opened.wait(10):
        emit({"event": "failed", "error": "not connected within 10 s"})
        return 1
    emit({"event": "open"})

    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        if op == "on":
            method = command["method"]
            connection.on(method, lambda args, method=method: emit({"event": "call", "method": method, "args": args}))
        elif op == "invoke":
            connection.send(
                command["method"],
                command["args"],
                lambda m, id=command["id"]: emit({"event": "completion", "id": id, "result": m.result}),
                invocation_id=str(command["id"]),
            )
        elif op == "stop":
            break
    stopping.set()
    # signalrcore's WebSocket transport waits for its reader thread, which waits for the socket
    # to close: shut the socket down first so that stop() returns.
    sock = getattr(getattr(connection.transport, "_client", None), "sock", None)
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    connection.stop()
    emit({"event": "closed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
