"""Where and how the library runs: the device and the precision of the weights (``device``), and stopping on a
signal at a safe point (``signals``). Imports only :mod:`ca2vdm.config` and :mod:`ca2vdm.errors`.
"""
