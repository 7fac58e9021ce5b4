"""Serve the live demo page: each chunk's frames are streamed to the browser the moment they are denoised.

    ca2vdm-serve                                         # the shipped model at http://127.0.0.1:7860/
    python infer/serve.py --checkpoint checkpoints/demo.safetensors checkpoints/latent-demo.safetensors --port 8000
    ca2vdm-serve --lora runs/demo-white/checkpoints/step_000300     # the demo model and demo+demo-white/step_000300

One generation runs per device at a time; other pages wait in a queue of at most --max-queue. See docs/serve.md.
"""
from __future__ import annotations

import argparse
import sys

from ca2vdm.cli.args import FLAGS, lora_spec, non_negative_int, positive_int
from ca2vdm.errors import Ca2vdmError
from ca2vdm.io.paths import DEFAULT_CHECKPOINT


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default 7860)")
    p.add_argument("--device", default="cpu", help="auto (CUDA when present, else the CPU), cpu, cuda or cuda:N "
                   "(default cpu)")
    p.add_argument("--checkpoint", nargs="+", default=[str(DEFAULT_CHECKPOINT)],
                   help="one or more checkpoints offered on the page (default: the shipped demo model); the page "
                        "names each by its file name")
    p.add_argument("--lora", type=lora_spec, action="append", default=[], metavar="PATH[:SCALE]",
                   help="also offer a LoRA adapter (a train.lora run's adapter.safetensors or checkpoint folder) on "
                        "the --checkpoint it was trained on, folded in times SCALE (default 1), as "
                        "<checkpoint>+<adapter>; repeatable")
    p.add_argument("--max-chunks", type=positive_int, default=1000,
                   help="most chunks one generation may ask for; 'until stopped' ends there too (default 1000)")
    p.add_argument("--max-queue", type=non_negative_int, default=4,
                   help="most generations waiting for the device; more are refused with a message (default 4)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import uvicorn  # after the arguments: --help answers before torch and the server load

    from ca2vdm.serve import create_app, load_catalog
    from ca2vdm.serve.protocol import MAX_UPLOAD_BYTES

    try:
        models = load_catalog(args.checkpoint, args.device, args.lora)
    except Ca2vdmError as e:
        sys.exit(f"error: {e.for_cli(FLAGS)}")
    except (ValueError, OSError) as e:
        sys.exit(f"error: {e}")
    app = create_app(models, max_chunks=args.max_chunks, max_queue=args.max_queue, device=args.device)
    print(f"serving {', '.join(models)} on {args.device} at http://{args.host}:{args.port}/", flush=True)
    uvicorn.run(app, host=args.host, port=args.port, ws_max_size=MAX_UPLOAD_BYTES + 2 ** 20, log_level="warning")


if __name__ == "__main__":
    main()
