// One live viewer: POST /api/devices/{device}/channels/{id}/live, then WHEP (WebRTC) or HTTP-FLV (mpegts.js)
// into a <video>.  A channel id is unique only within its device, so the console always names the device.
import { api } from "./api.js";
import { t } from "./i18n.js";

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

export class LivePlayer {
  constructor(video, onState) {
    this.video = video;
    this.onState = onState || (() => {});
    this.session = null;
    this.pc = null;
    this.flv = null;
    this.kind = null;
    this.closed = false;
  }

  async play(channel, { transport = "udp", player = "auto" } = {}) {
    this.onState("busy", t("live.requesting"));
    const body = transport ? { transport } : {};
    this.session = await api("POST", liveUrl(channel), { body });
    if (this.closed) { await this.stop(); return; }
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
        this.session = await api("POST", liveUrl(channel), { body });
        await this.playFlv(this.session);
      }
    }
    this.onState("playing", `${t("live.playing")} · ${this.kind === "whep" ? "WebRTC" : "HTTP-FLV"}${info ? " · " + info : ""}`);
  }

  async playWhep(s) {
    this.kind = "whep";
    const pc = new RTCPeerConnection();
    this.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addTransceiver("audio", { direction: "recvonly" });  // the channel's sound (Opus), when it has any
    // video and audio may arrive as tracks of different streams: gather both in one
    const media = new MediaStream();
    pc.ontrack = (ev) => { media.addTrack(ev.track); this.video.srcObject = media; };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && !this.closed) this.onState("error", "WebRTC: " + pc.connectionState);
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === "complete") return resolve();
      pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
      setTimeout(resolve, 2000);
    });
    const r = await fetch(s.whep_url, { method: "POST", headers: { "Content-Type": "application/sdp" },
                                        body: pc.localDescription.sdp });
    if (r.status !== 201) throw new Error("WHEP: HTTP " + r.status + " " + await r.text());
    this.attached = true;
    await pc.setRemoteDescription({ type: "answer", sdp: await r.text() });
    await this.video.play().catch(() => {});
  }

  async playFlv(s) {
    this.kind = "flv";
    const mpegts = await loadMpegts();
    if (!mpegts || !mpegts.isSupported()) throw new Error(t("live.flv_missing"));
    this.flv = mpegts.createPlayer({ type: "flv", isLive: true, url: s.flv_url },
                                   { enableStashBuffer: false, liveBufferLatencyChasing: true });
    this.flv.attachMediaElement(this.video);
    this.flv.load();
    await Promise.resolve(this.flv.play()).catch(() => {});
  }

  async stopMedia() {
    if (this.pc) { this.pc.close(); this.pc = null; }
    if (this.flv) { try { this.flv.destroy(); } catch (_) { /* already gone */ } this.flv = null; }
    const s = this.session;
    this.session = null;
    if (s) {
      // An attached WHEP session ends with its WHEP DELETE; anything else through the session API.
      if (this.kind === "whep" && this.attached) {
        try { await fetch(s.whep_url, { method: "DELETE" }); } catch (_) { /* gone */ }
      } else {
        try { await api("DELETE", "/api/sessions/" + s.session_id); } catch (_) { /* ended already */ }
      }
    }
    this.attached = false;
    this.video.srcObject = null;
    this.video.removeAttribute("src");
  }

  async stop() {
    this.closed = true;
    await this.stopMedia();
    this.onState("idle", t("live.closed"));
  }
}
