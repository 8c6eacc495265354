// One live viewer: POST /api/devices/{device}/channels/{id}/live, then WHEP (WebRTC) or HTTP-FLV (mpegts.js)
// into a <video>.  A channel id is unique only within its device, so the console always names the device.
import { api } from "./api.js";
import { extend, t } from "./i18n.js";

extend({
  "wall.ended": "视频流已中断",
  "wall.stalled": "画面已停止",
}, {
  "wall.ended": "The stream has ended",
  "wall.stalled": "The picture has stopped",
});

let mpegtsLoading = null;

// /static/mpegts.js is optional (fetched by `make run`); load it once, on first need.
export function loadMpegts() {
  if (window.mpegts) return Promise.resolve(window.mpegts);
  if (!mpegtsLoading) {
    mpegtsLoading = new Promise((resolve) => {
      const s = document.createElement("script");
      s.src = "/static/mpegts.js";
      s.onload = () => resolve(window.mpegts || null);
      s.onerror = () => { mpegtsLoading = null; resolve(null); };
      document.head.append(s);
    });
  }
  return mpegtsLoading;
}

// The live route of a channel: {deviceId, id} (or {device_id, channel_id}); the shorthand
// /api/channels/{id}/live only without a device (it answers 409 ambiguous_channel when the id is not unique).
export function liveUrl(channel) {
  const id = typeof channel === "string" ? channel : (channel.id ?? channel.channel_id);
  const device = typeof channel === "string" ? null : (channel.deviceId ?? channel.device_id);
  return device
    ? `/api/devices/${encodeURIComponent(device)}/channels/${encodeURIComponent(id)}/live`
    : `/api/channels/${encodeURIComponent(id)}/live`;
}

// Resolves once `video` has played `settle` seconds of pictures (rejects after `ms`): the moment a player may swap
// to it. Not at its very first frame: a live FLV player that just started may still pause to fill its buffer
// (measured in Chromium: up to 0.8 s right after a swap on the first frame), while the old output plays on.
function firstFrame(video, ms, settle = 0.5) {
  return new Promise((resolve, reject) => {
    let first = null;
    const done = () => { clearTimeout(timer); video.removeEventListener("playing", check); video.removeEventListener("timeupdate", check); };
    const check = () => {
      if (video.readyState < 2 || video.currentTime <= 0) return;
      if (first === null) first = video.currentTime;
      if (video.currentTime - first >= settle) { done(); resolve(); }
    };
    const timer = setTimeout(() => { done(); reject(new Error("no frame from the new media node")); }, ms);
    video.addEventListener("playing", check);
    video.addEventListener("timeupdate", check);
    check();
  });
}

const MOVE_POLL_MS = 2000;
const STALL_MS = 10000;  // a playing picture that has not advanced for this long counts as failed  // how often a player placed on a cluster media node asks whether its session moved

export class LivePlayer {
  constructor(video, onState) {
    this.video = video;
    this.onVideo = () => {};  // the <video> element was replaced (an FLV session that moved): the view's reference
    this.onSession = () => {};  // each live answer ({stream, sub_stream, ...}): the stream watched, a sub-stream or not
    this.onState = onState || (() => {});
    this.session = null;
    this.pc = null;
    this.flv = null;
    this.kind = null;
    this.closed = false;
    this.ended = false;  // the session ended on its own (its output closed): nothing left to DELETE
  }

  // The stream stopped by itself (the device went offline, the media node ended it): the view decides (a retry).
  fail(text, gone = true) {
    if (this.closed || this.failed) return;
    this.failed = true;
    if (gone) this.ended = true;
    this.stopWatch();
    this.onState("error", text);
  }

  // A picture that stops advancing without its output closing (packets stopped) fails after STALL_MS.
  watchStall() {
    let last = -1, since = Date.now();
    this.stallTimer = setInterval(() => {
      if (this.closed || this.failed || this.switching) return;
      const now = this.video.currentTime;
      if (now !== last) { last = now; since = Date.now(); return; }
      if (Date.now() - since >= STALL_MS) this.fail(t("wall.stalled"), false);
    }, 1000);
  }

  // `stream`: "main" or "sub" (the device's sub-stream); none: the platform's default.
  async play(channel, { transport = "udp", player = "auto", stream = null } = {}) {
    this.failed = false;
    this.ended = false;
    this.onState("busy", t("live.requesting"));
    const body = transport ? { transport } : {};
    if (stream) body.stream = stream;
    this.session = await api("POST", liveUrl(channel), { body });
    if (this.closed) { await this.stopMedia(); return; }
    this.onSession(this.session);
    const s = this.session;
    const info = [s.codec && s.codec.toUpperCase(), s.width && s.height ? `${s.width}×${s.height}` : null]
      .filter(Boolean).join(" ");
    this.onState("busy", t("live.connecting"));
    if (player === "flv") {
      await this.playFlv(s);
    } else {
      try {
        await this.playWhep(s);
      } catch (err) {
        if (player !== "auto") throw err;
        // WebRTC failed (no ICE path, no H.264 decoder): the same channel over HTTP-FLV with a new session.
        await this.stopMedia();
        this.failed = false;
        this.ended = false;
        if (this.closed) return;
        this.session = await api("POST", liveUrl(channel), { body });
        if (this.closed) { await this.stopMedia(); return; }
        this.onSession(this.session);
        await this.playFlv(this.session);
      }
    }
    if (this.closed) return;
    this.onState("playing", `${t("live.playing")} · ${this.kind === "whep" ? "WebRTC" : "HTTP-FLV"}${info ? " · " + info : ""}`);
    this.watchMoves();
    this.watchStall();
  }

  // A session on a cluster media node (absolute output URLs) moves when that node drains (a rolling restart):
  // GET /api/sessions/{id} then names `moved`, the session's URLs on its new node. The player opens the new
  // one while the old one still plays and swaps once it plays (no black gap), then closes the old one
  // (which lets the draining node finish). Relative URLs (the single process): nothing moves, no polling.
  watchMoves() {
    this.stopWatch();
    const s = this.session;
    if (!s || !/^https?:\/\//.test(s.flv_url || "")) return;
    const sid = s.session_id;
    this.moveTimer = setInterval(async () => {
      if (this.closed || this.switching || !this.session || this.session.session_id !== sid) return;
      let st = null;
      try { st = await api("GET", "/api/sessions/" + encodeURIComponent(sid)); } catch (_) { return; }
      const m = st && st.moved;
      if (!m || !this.session || m.flv_url === this.session.flv_url || m.flv_url === this.failedMove) return;
      this.switching = true;
      try {
        await this.follow(m);
      } catch (err) {
        this.failedMove = m.flv_url;  // its single-use URL is spent: the old output plays until its node stops
        console.warn("live: could not follow the moved session", err);
      } finally {
        this.switching = false;
      }
    }, MOVE_POLL_MS);
  }

  stopWatch() {
    if (this.moveTimer) { clearInterval(this.moveTimer); this.moveTimer = null; }
    if (this.stallTimer) { clearInterval(this.stallTimer); this.stallTimer = null; }
  }

  async follow(m) {
    const old = this.session;
    const next = { ...old, flv_url: m.flv_url, whep_url: m.whep_url, node_id: m.node_id };
    if (this.kind === "whep") {
      const { pc, media } = await this.connectWhep(next);
      const probe = document.createElement("video");
      probe.muted = true;
      probe.srcObject = media;
      try {
        await probe.play().catch(() => {});
        await firstFrame(probe, 15000);
      } catch (err) {
        pc.close();
        throw err;
      } finally {
        probe.srcObject = null;
      }
      if (this.closed) { pc.close(); return; }
      const oldPc = this.pc;
      this.pc = pc;
      this.video.srcObject = media;
      if (oldPc) oldPc.close();
      try { await fetch(old.whep_url, { method: "DELETE" }); } catch (_) { /* its node is leaving */ }
    } else {
      const mpegts = await loadMpegts();
      const fresh = this.video.cloneNode(false);
      fresh.muted = this.video.muted;
      const shown = fresh.style.cssText;
      fresh.style.cssText = shown + ";position:absolute;visibility:hidden;pointer-events:none";
      this.video.after(fresh);
      const flv = mpegts.createPlayer({ type: "flv", isLive: true, url: next.flv_url },
                                      { enableStashBuffer: false, liveBufferLatencyChasing: true });
      flv.attachMediaElement(fresh);
      flv.load();
      try {
        await Promise.resolve(flv.play()).catch(() => {});
        await firstFrame(fresh, 15000);
      } catch (err) {
        try { flv.destroy(); } catch (_) { /* gone */ }
        fresh.remove();
        throw err;
      }
      if (this.closed) { try { flv.destroy(); } catch (_) { /* gone */ } fresh.remove(); return; }
      const oldVideo = this.video;
      const oldFlv = this.flv;
      fresh.style.cssText = shown;
      this.video = fresh;
      this.flv = flv;
      oldVideo.remove();
      if (oldFlv) { try { oldFlv.destroy(); } catch (_) { /* gone */ } }  // its output closes on the old node
      this.onVideo(fresh);
    }
    this.session = next;
  }

  async playWhep(s) {
    this.kind = "whep";
    const { media } = await this.connectWhep(s, true);
    this.video.srcObject = media;
    this.attached = true;
    await this.video.play().catch(() => {});
  }

  // A WebRTC peer for the session's `whep_url`; `current`: it becomes this.pc at once (else the caller swaps).
  async connectWhep(s, current = false) {
    const pc = new RTCPeerConnection();
    if (current) this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });  // the channel's sound (Opus), when it has any
    // video and audio may arrive as tracks of different streams: gather both in one
    const media = new MediaStream();
    pc.ontrack = (ev) => { media.addTrack(ev.track); if (this.pc === pc) this.video.srcObject = media; };
    pc.onconnectionstatechange = () => {
      if ((pc.connectionState === "failed" || pc.connectionState === "closed") && !this.closed && this.pc === pc) {
        this.fail(t("wall.ended"));  // the media node ends a session whose peer failed: nothing to DELETE
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
      setTimeout(resolve, 2000);
    });
    if (this.closed) { pc.close(); throw new Error(t("live.closed")); }  // its session is being deleted
    const r = await fetch(s.whep_url, { method: "POST", headers: { "Content-Type": "application/sdp" },
                                        body: pc.localDescription.sdp });
    if (r.status !== 201) {
      if (!current) pc.close();
      throw new Error("WHEP: HTTP " + r.status + " " + await r.text());
    }
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    return { pc, media };
  }

  async playFlv(s) {
    this.kind = "flv";
    const mpegts = await loadMpegts();
    if (!mpegts || !mpegts.isSupported()) throw new Error(t("live.flv_missing"));
    if (this.closed) return;
    const flv = mpegts.createPlayer({ type: "flv", isLive: true, url: s.flv_url },
                                    { enableStashBuffer: false, liveBufferLatencyChasing: true });
    this.flv = flv;
    // the output closed (the stream ended, or its HTTP connection broke): the media node ends the session with it
    const gone = () => { if (this.flv === flv && !this.switching) this.fail(t("wall.ended")); };
    flv.on(mpegts.Events.ERROR, gone);
    flv.on(mpegts.Events.LOADING_COMPLETE, gone);
    this.flv.attachMediaElement(this.video);
    this.flv.load();
    await Promise.resolve(this.flv.play()).catch(() => {});
  }

  // Ends the session on the server first, while its output is still attached, and only then closes the output:
  // a closed output ends the session by itself, and a DELETE after it would be answered 404 (a failed load in the
  // browser's console). A session that already ended on its own (`ended`) is not deleted again.
  async stopMedia() {
    this.stopWatch();
    const s = this.session, pc = this.pc, flv = this.flv, whep = this.kind === "whep" && this.attached;
    this.session = null;
    this.pc = null;
    this.flv = null;
    this.attached = false;
    if (s && !this.ended) {
      if (whep) {
        try { await fetch(s.whep_url, { method: "DELETE" }); } catch (_) { /* gone */ }
      } else {
        try { await api("DELETE", "/api/sessions/" + s.session_id); } catch (_) { /* ended already */ }
      }
    }
    if (pc) pc.close();
    if (flv) { try { flv.destroy(); } catch (_) { /* already gone */ } }
    this.video.srcObject = null;
    this.video.removeAttribute("src");
  }

  async stop() {
    this.closed = true;
    await this.stopMedia();
    this.onState("idle", t("live.closed"));
  }
}
