"""GB/T 28181 device simulator: many simulated IPCs/NVRs in one process (``gbops sim``).

:class:`SimConfig` says what to simulate, :class:`Simulator` runs it on asyncio, :func:`run_simulator`
is the command-line loop (progress lines, SIGINT/SIGTERM, clean unregister).  The device behaviour itself
is sans-IO, in :mod:`gbsim.device` (:class:`SimDevice`, :class:`Fleet`).  INVITEd channels
stream a clock test pattern (H.264/H.265 in RTP/PS over UDP or TCP) from one shared encoder per process:
:mod:`gbsim.media`.  Each channel also has simulated recordings (:mod:`gbsim.records`: RecordInfo in pages,
``s=Playback`` / ``s=Download`` calls, MANSRTSP control, MediaStatus 121), streamed by a per-call encoder
whose pictures carry the recording's own time as text and as a machine-readable code
(:mod:`gbsim.playback`, :func:`gbsim.playback.read_time_code`).
"""

from gbsim.device import Fleet, SimConfig, SimDevice
from gbsim.runner import Simulator, run_simulator

__all__ = ["Fleet", "SimConfig", "SimDevice", "Simulator", "run_simulator"]
