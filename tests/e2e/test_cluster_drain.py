"""Drain a media node while two viewers watch (issue 17, "rolling restart with no interruption").

A cluster on this machine (PostgreSQL and Redis): one node with the sip, portal and worker roles and two media
nodes on other loopback addresses, simulated devices. Two viewers watch one channel over HTTP-FLV from the media
node that owns it, each playing like the console's player: it reads its FLV URL and polls its session
(``GET /api/sessions/{id}``); when the session names ``moved`` it opens the new URL while the old one still
plays and switches on the new one's first video frame, then closes the old one. The owner gets SIGTERM: it
drains (the other node INVITEs the channel before this one lets go), then exits cleanly. Measured: the largest
gap between the video tags each viewer is shown, which must stay within 1 s; the stream is then on the other
node; the audit log has one ``live.start`` per viewer, a ``live.move`` each, and no ``live.stop`` until the
viewers close (then one each, same session ids).
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from gbsim import SimConfig, Simulator
from tests.e2e.platform import STRONG_SIP_PASSWORD
from tests.e2e.test_cluster_live import Node, first_channel, lease_holder, logs, running_cluster

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DEVICES = 50


@pytest.fixture
async def cluster(tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str):
    async with running_cluster(tmp_path, pg_url, redis_url, redis_prefix, GBOPS_DRAIN_TIMEOUT="30",
                               GBOPS_WEBRTC_LOOPBACK="true") as nodes:
        yield nodes


class FlvTags(threading.Thread):
    """Reads an HTTP-FLV URL and notes the arrival (monotonic) of each video frame tag (the sequence header is
    not a picture), until :meth:`close`."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.video: list[float] = []
        self.status: int | None = None
        self.error: str | None = None
        self.ended = False
        self._closing = threading.Event()

    def run(self) -> None:
        buf = bytearray()
        header_done = False
        try:
            with httpx.stream("GET", self.url, timeout=10) as r:
                self.status = r.status_code
                if r.status_code != 200:
                    return
                for chunk in r.iter_bytes():
                    now = time.monotonic()
                    buf += chunk
                    if not header_done:
                        if len(buf) < 13:
                            continue
                        assert buf[:3] == b"FLV", bytes(buf[:3])
                        del buf[:13]  # header (9) and PreviousTagSize0 (4)
                        header_done = True
                    while len(buf) >= 11:
                        size = int.from_bytes(buf[1:4], "big")
                        if len(buf) < 11 + size + 4:
                            break
                        if buf[0] == 9 and size >= 2 and (buf[11] & 0x0F not in (7, 12) or buf[12] == 1):
                            self.video.append(now)  # a picture (not the AVC/HEVC sequence header)
                        del buf[:11 + size + 4]
                    if self._closing.is_set():
                        return
        except httpx.HTTPError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = True

    def close(self) -> None:
        self._closing.set()


class Viewer:
    """A player as the console's: plays its session's FLV, polls the session, switches when it moved."""

    def __init__(self, core: Node, live: dict) -> None:
        self.core = core
        self.session_id = live["session_id"]
        self.reader = FlvTags(live["flv_url"])
        self.shown: list[float] = []  # the video tags this viewer was shown (the old reader's, then the new's)
        self.switched_to: str | None = None
        self.switch_at: float | None = None
        self.old: FlvTags | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._play, daemon=True)

    def start(self) -> None:
        self.reader.start()
        self._thread.start()

    def _play(self) -> None:
        seen_moves: set[str] = set()
        while not self._stop.wait(0.3):
            r = self.core.get(f"/api/sessions/{self.session_id}")
            moved = r.json().get("moved") if r.status_code == 200 else None
            if not moved or moved["flv_url"] in seen_moves:
                continue
            seen_moves.add(moved["flv_url"])
            new = FlvTags(moved["flv_url"])
            new.start()
            deadline = time.monotonic() + 15
            while not new.video and time.monotonic() < deadline and not new.ended:
                time.sleep(0.01)
            if not new.video:
                new.close()
                continue
            old, self.reader = self.reader, new
            cut = new.video[0]
            self.shown += [t for t in old.video if t < cut]  # the old output plays until the new one has a frame
            old.close()
            self.old, self.switched_to, self.switch_at = old, moved["flv_url"], cut

    def stop(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join(10)
        self.reader.close()
        self.shown += list(self.reader.video)

    def largest_gap(self) -> float:
        return max(b - a for a, b in zip(self.shown, self.shown[1:], strict=False))


def drain_command(node: Node, node_id: str) -> subprocess.CompletedProcess:
    """``gbops node drain --node <id> --wait 60`` with the cluster's Redis settings (any machine reaching Redis)."""
    env = {k: v for k, v in node.env.items() if not k.startswith("GBOPS_")}
    env.update({k: node.env[k] for k in ("GBOPS_REDIS_URL", "GBOPS_REDIS_PREFIX", "GBOPS_DATA_DIR")})
    return subprocess.run([sys.executable, "-m", "gbops.cli", "node", "drain", "--node", node_id, "--wait", "60"],
                          env=env, capture_output=True, text=True, timeout=90)


@pytest.mark.parametrize("trigger", ["sigterm", "gbops node drain"])
async def test_draining_a_media_node_keeps_both_viewers_playing(cluster, redis_url, redis_prefix, trigger):
    core, media_a, media_b = cluster
    sim = Simulator(SimConfig(server=("127.0.0.1", core.sip_port), devices=DEVICES, channels=1,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=100))
    await sim.start()
    viewers: list[Viewer] = []
    try:
        device, channel = await first_channel(sim, core, DEVICES, 60)
        path = f"/api/devices/{device}/channels/{channel}/live"
        answers = []
        for _ in range(2):
            r = await asyncio.to_thread(core.post, path, {})
            assert r.status_code == 201, (r.text, logs(cluster))
            answers.append(r.json())
        owner, other = (media_a, media_b) if answers[0]["flv_url"].startswith(media_a.base + "/") else (media_b,
                                                                                                         media_a)
        owner_id, other_id = ("media-a", "media-b") if owner is media_a else ("media-b", "media-a")
        assert all(a["flv_url"].startswith(owner.base + "/flv/") for a in answers), answers
        device_sim = sim.fleet.by_id[device]
        assert device_sim.stats.invites_received == 1

        viewers = [Viewer(core, a) for a in answers]
        for v in viewers:
            v.start()
        await asyncio.to_thread(core.wait_for, lambda: all(len(v.reader.video) >= 25 for v in viewers), 15,
                                "both viewers playing")

        # SIGTERM on the owner: it drains (readiness 503 "draining" meanwhile), then exits
        readiness: list[str] = []

        def probe() -> None:
            while owner.proc.poll() is None:
                try:
                    r = httpx.get(owner.base + "/api/health", params={"ready": 1}, timeout=2)
                    readiness.append(f"{r.status_code} {r.json().get('status')}")
                except httpx.HTTPError:
                    pass
                time.sleep(0.1)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()
        await asyncio.to_thread(core.wait_for, lambda: readiness, 5, "the owner's readiness before the drain")
        t0 = time.monotonic()
        if trigger == "sigterm":
            rc = await asyncio.to_thread(owner.stop, signal.SIGTERM, 60)
        else:  # the command over the bus: the node drains and exits by itself, the command sees it leave
            done = await asyncio.to_thread(drain_command, core, owner_id)
            assert done.returncode == 0, (done.stdout, done.stderr, owner.log()[-3000:])
            assert f"node {owner_id} has left" in done.stdout, done.stdout
            rc = await asyncio.to_thread(owner.proc.wait, 30)
        drained_in = time.monotonic() - t0
        prober.join(5)
        assert "200 ok" in readiness and "503 draining" in readiness, readiness
        assert rc == 0, (rc, owner.log()[-4000:])
        assert "cluster_media.drained" in owner.log() and "platform.stopped" in owner.log()
        for v in viewers:
            assert v.switched_to is not None and v.switched_to.startswith(other.base + "/flv/"), (
                v.switched_to, logs(cluster))
        # both keep receiving frames from the other node
        counts = [len(v.reader.video) for v in viewers]
        await asyncio.to_thread(core.wait_for, lambda: all(len(v.reader.video) >= c + 50 for v, c in
                                                           zip(viewers, counts, strict=True)), 10,
                                "frames from the new node")
        for v in viewers:
            v.stop()
        gaps = [v.largest_gap() for v in viewers]
        print(f"drain ({trigger}): the owner exited {drained_in:.2f} s after the request; largest gap between video frames "
              f"per viewer: {', '.join(f'{g * 1000:.0f} ms' for g in gaps)}; frames shown: "
              f"{[len(v.shown) for v in viewers]}")
        assert max(gaps) <= 1.0, gaps
        assert all(v.switch_at is not None and v.shown[0] < v.switch_at < v.shown[-1] for v in viewers)

        # make before break: the other node INVITEd while the owner's call still ran; the owner's call ended
        assert device_sim.stats.invites_received == 2
        assert await lease_holder(redis_url, redis_prefix, f"stream:{device}/{channel}") in (other_id, None)
        await sim.wait_until(lambda s: device_sim.stats.byes_received >= 1, 10)
        assert device_sim.stats.byes_received >= 1

        # the audit log: one live.start per viewer, a live.move each (owner -> other), one live.stop each once
        # the viewers closed (the new node's, reason player disconnected), none for the move
        def entries(action: str) -> list[dict]:
            return core.get("/api/audit/entries", action=action, limit=50).json()["items"]

        sessions = {a["session_id"] for a in answers}
        stops = await asyncio.to_thread(core.wait_for, lambda: len(entries("live.stop")) >= 2 and entries(
            "live.stop"), 15, "live.stop of both viewers")
        starts, moves = entries("live.start"), entries("live.move")
        assert {e["detail"]["session_id"] for e in starts} == sessions and len(starts) == 2, starts
        assert {e["detail"]["session_id"] for e in moves} == sessions and len(moves) == 2, moves
        assert all(e["detail"]["from"] == owner_id and e["detail"]["to"] == other_id for e in moves), moves
        assert {e["detail"]["session_id"] for e in stops} == sessions and len(stops) == 2, stops
        assert all(e["detail"]["reason"] == "player disconnected" for e in stops), stops
        assert all(e["target"]["id"] == f"{device}/{channel}" for e in starts + moves + stops)
        # the drain itself is evidence: which node, asked by whom, what moved
        (drained,) = entries("node.drain")
        assert drained["target"] == {"type": "node", "id": owner_id}, drained
        assert drained["detail"]["moved"] == 2 and drained["detail"]["failed"] == 0, drained
        assert drained["detail"]["by"] == "signal" if trigger == "sigterm" else "@" in drained["detail"]["by"]
        # the other node's stream ends with its last viewer; nothing left on the owner (it is gone)
        await asyncio.to_thread(core.wait_for, lambda: core.get("/api/streams").json()["items"] == [], 15,
                                "no stream left")
    finally:
        for v in viewers:
            v.stop()
        await sim.stop()


# The console's own player (ops_portal/web/console/player.js) in Debian Chromium: a <video> whose presented
# frames are timed with requestVideoFrameCallback, on whichever element the player shows (it swaps elements
# when an FLV session moves: onVideo).
_PLAY = """async ([device, channel, kind]) => {
  const { LivePlayer } = await import("/console/assets/player.js");
  const video = document.createElement("video");
  video.muted = true; video.autoplay = true; video.playsInline = true;
  video.style.cssText = "width:640px;height:360px";
  document.body.append(video);
  window.__frames = [];
  const watch = (v) => {
    const tick = (now) => { if (v.isConnected) { window.__frames.push(now); v.requestVideoFrameCallback(tick); } };
    v.requestVideoFrameCallback(tick);
  };
  const player = new LivePlayer(video, () => {});
  player.onVideo = (fresh) => { window.__swap = performance.now(); watch(fresh); };
  window.__player = player;
  watch(video);
  await player.play({ id: channel, deviceId: device }, { player: kind });
  return player.session.flv_url;
}"""


@pytest.mark.parametrize("kind", ["flv", "whep"])
async def test_the_console_player_follows_a_drained_node_in_chromium(cluster, tmp_path, kind):
    from tests.e2e.console_support import browser_ready, console_page
    from tests.e2e.platform import ADMIN_NEW_PASSWORD

    sync_playwright, shots = browser_ready(tmp_path)
    core, media_a, media_b = cluster
    sim = Simulator(SimConfig(server=("127.0.0.1", core.sip_port), devices=2, channels=1,
                              password=STRONG_SIP_PASSWORD, codec="h264", size="640x360", register_rate=50))
    await sim.start()
    try:
        device, channel = await first_channel(sim, core, 2, 30)
        await asyncio.to_thread(core.login)  # the initial password changed: ADMIN_NEW_PASSWORD

        def browse() -> dict:
            with sync_playwright() as pw:
                browser, page, errors = console_page(pw, core.base, "admin", ADMIN_NEW_PASSWORD,
                                                     extra_args=("--autoplay-policy=no-user-gesture-required",))
                try:
                    first = page.evaluate(_PLAY, [device, channel, kind])
                    page.wait_for_function("window.__frames.length >= 25", timeout=20_000)
                    owner = media_a if first.startswith(media_a.base + "/") else media_b
                    other = media_b if owner is media_a else media_a
                    before = page.evaluate("window.__frames.length")
                    rc = owner.stop(signal.SIGTERM, 60)
                    page.wait_for_function(f"window.__player.session.flv_url.startsWith({other.base + '/'!r})",
                                           timeout=20_000)
                    page.wait_for_function(f"window.__frames.length >= {before} + 75", timeout=20_000)
                    frames = page.evaluate("window.__frames")
                    page.screenshot(path=str(shots / f"cluster-drain-player-{kind}.png"))
                    page.evaluate("window.__player.stop()")
                    return {"rc": rc, "frames": frames, "swap": page.evaluate("window.__swap || null"), "errors": errors, "owner": owner.base,
                            "now": page.evaluate("window.__player.video.isConnected"),
                            "videos": page.evaluate("document.querySelectorAll('video').length")}
                finally:
                    browser.close()

        seen = await asyncio.to_thread(browse)
        frames = seen["frames"]
        gaps = [(b - a, a) for a, b in zip(frames, frames[1:], strict=False)]
        gap, gap_at = max(gaps)
        gap /= 1000
        swap = seen["swap"]
        where = f", {(gap_at - swap) / 1000:+.2f} s from the swap" if swap is not None else ""
        print(f"drain in Chromium (console player, {kind}): largest gap between presented frames {gap * 1000:.0f} "
              f"ms over {len(frames)} frames{where}")
        assert seen["rc"] == 0 and not seen["errors"], seen["errors"]
        assert seen["videos"] == 1 and seen["now"], "the old <video> was replaced by the new one, not added to"
        assert gap <= 1.0, gap
    finally:
        await sim.stop()
