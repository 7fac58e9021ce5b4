"""Files and media: reading and resizing videos and images (their frame size checked from the header before
decoding), the atomic mp4 writer and contact sheets, atomic file writes, the one writer of results JSON
(``results``), what a failed write means (a full disk), where outputs may go (never onto a device, pipe, socket or
folder, nor onto an input), and plots that never cost a benchmark its JSON.

Knows nothing of models: frames are uint8 arrays or float tensors in [-1, 1]. Imports only :mod:`ca2vdm.errors`
and :mod:`ca2vdm.config` from the package.
"""
