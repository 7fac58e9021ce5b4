"""Serve the live demo page: each chunk's frames are streamed to the browser the moment they are denoised.

    ca2vdm serve                                         # the shipped model at http://127.0.0.1:7860/
    python infer/serve.py --checkpoint checkpoints/demo.safetensors checkpoints/latent-demo.safetensors --port 8000
    ca2vdm serve --lora runs/demo-white/checkpoints/step_000300     # the demo model and demo+demo-white/step_000300
    ca2vdm serve --base Wan2.1-T2V-1.3B-Diffusers --checkpoint self_forcing_dmd.pt --device cuda   # a Wan folder

One generation runs per device at a time; other pages wait in a queue of at most --max-queue. A connection whose
request headers are not in within 10 s is closed, and at most 256 connections are served at once
(ca2vdm/serve/connections.py). See docs/serve.md.
"""
from __future__ import annotations

import argparse
import errno
import socket
import sys

from ca2vdm.cli.args import FLAGS, add_base_flags, count, lora_spec, new_parser, non_negative_int, number, positive_int
from ca2vdm.config.options import Declared
from ca2vdm.errors import Ca2vdmError
from ca2vdm.io.paths import DEFAULT_CHECKPOINT

port_number = count(1, 65535)  # a TCP port
seconds = number(Declared(float, "a time-out in seconds", low=0, low_open=True, high=10 ** 6))


def parse_args(argv: list[str] | None = None, prog: str | None = None) -> argparse.Namespace:
    p = new_parser(__doc__, prog)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_number, default=7860, help="port, 1 .. 65535 (default 7860)")
    p.add_argument("--device", default="cpu", help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N "
                   "(default cpu)")
    p.add_input("--checkpoint", nargs="+", default=None,
                help="one or more checkpoints offered on the page (default: the shipped demo model; with --base, the "
                     "folder's own transformer); the page names each by its file name")
    p.add_argument("--lora", type=lora_spec, action="append", default=[], metavar="PATH[:SCALE]",
                   help="also offer a LoRA adapter (a train.lora run's adapter.safetensors or checkpoint folder) on "
                        "the --checkpoint it was trained on, folded in times SCALE (default 1), as "
                        "<checkpoint>+<adapter>; repeatable")
    p.add_argument("--max-chunks", type=positive_int, default=1000,
                   help="most chunks one generation may ask for; 'until stopped' ends there too (default 1000)")
    p.add_argument("--max-queue", type=non_negative_int, default=4,
                   help="most generations waiting for the device; more are refused with a message (default 4)")
    p.add_argument("--ack-timeout", type=seconds, default=30.0,
                   help="end a generation whose page has shown no new frame for this many seconds while the server "
                        "waits for it (a hidden tab, a client that does not answer); default 30")
    p.add_argument("--queue-timeout", type=seconds, default=600.0,
                   help="seconds a page may wait in the queue for the device before it is told to try again "
                        "(default 600)")
    add_base_flags(p)
    args = p.parse_args(argv)
    args.checkpoint = args.checkpoint or [args.base or str(DEFAULT_CHECKPOINT)]
    return args


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host``:``port``; SystemExit with one line naming the flag to change otherwise."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
        return socket.create_server((host, port), family=family)
    except socket.gaierror as e:
        sys.exit(f"error: --host {host}: not a known address ({e.strerror}); give an address of this machine, e.g. "
                 "127.0.0.1 (this machine only) or 0.0.0.0 (every network)")
    except OSError as e:
        problems = {errno.EADDRINUSE: (f"--port {port}", "the port is already in use (another server?); choose "
                                       "another --port or stop the program using it"),
                    errno.EADDRNOTAVAIL: (f"--host {host}", "not an address of this machine; give one of its "
                                          "addresses, e.g. 127.0.0.1 or 0.0.0.0"),
                    errno.EACCES: (f"--port {port}", "permission denied (ports below 1024 need privileges); choose "
                                   "a port of 1024 or more")}
        flag, problem = problems.get(e.errno, (f"--host {host} --port {port}", f"cannot listen there: "
                                               f"{e.strerror or e}"))
        sys.exit(f"error: {flag}: {problem}")


def main(argv: list[str] | None = None, prog: str | None = None) -> None:
    args = parse_args(argv, prog)
    sock = listen(args.host, args.port)  # before the model loads: a port in use is told at once
    import uvicorn  # after the arguments: --help answers before torch and the server load

    from ca2vdm.serve import create_app, load_catalog
    from ca2vdm.serve.connections import server_config
    from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES

    try:
        models = load_catalog(args.checkpoint, args.device, args.lora, base=args.base, size=args.size,
                              offload_text_encoder=args.offload_text_encoder)
    except Ca2vdmError as e:
        sock.close()
        sys.exit(f"error: {e.for_cli(FLAGS)}")
    except (ValueError, OSError) as e:
        sock.close()
        sys.exit(f"error: {e}")
    app = create_app(models, max_chunks=args.max_chunks, max_queue=args.max_queue, device=args.device,
                     ack_timeout=args.ack_timeout, queue_timeout=args.queue_timeout)
    print(f"serving {', '.join(models)} on {args.device} at http://{args.host}:{args.port}/", flush=True)
    config = server_config(app, ws_max_size=MAX_UPLOAD_BYTES + 2 ** 20, log_level="warning")  # bounded connections
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
