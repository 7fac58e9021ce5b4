"""Generate a long video chunk by chunk with the shared KV cache: ``ca2vdm generate`` (also
``ca2vdm-generate``; ca2vdm/cli/generate.py), every flag the same.

    python infer/long_video.py --chunks 20
"""
from ca2vdm.cli.generate import main

if __name__ == "__main__":
    main()
