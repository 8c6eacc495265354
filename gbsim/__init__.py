"""GB/T 28181 device simulator: many simulated IPCs/NVRs in one process (``gbops sim``).

:class:`SimConfig` says what to simulate, :class:`Simulator` runs it on asyncio, :func:`run_simulator`
is the command-line loop (progress lines, SIGINT/SIGTERM, clean unregister).  The device behaviour itself
is sans-IO, in :mod:`gbsim.device` (:class:`SimDevice`, :class:`Fleet`).  INVITEd channels
stream a clock test pattern (H.264/H.265 in RTP/PS over UDP or TCP) from one shared encoder per process:
:mod:`gbsim.media`.
"""

from gbsim.device import Fleet, SimConfig, SimDevice
from gbsim.runner import Simulator, run_simulator

__all__ = ["Fleet", "SimConfig", "SimDevice", "Simulator", "run_simulator"]
