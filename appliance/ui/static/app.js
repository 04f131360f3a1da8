// Booking station officer UI: plain JavaScript, no build step, no third-party code. This file is the page's
// core (screens, booking, review, queue; over 500 lines because they share one state object and one poll);
// presence.js (idle lock warning, hand-over) and officers.js (admin screen, number keypad) use its globals.
// One page with screens (sign-in, start, booking, review, queue). State lives on the station; the page
// polls it (booking state 4x a second on the booking screen, the queue every 5 s) and sends officer
// actions as JSON. Every request carries the X-Booking-Station header the server requires (CSRF guard).
"use strict";

const $ = (id) => document.getElementById(id);
const POSES = ["frontal", "left_profile", "right_profile"];
const POSE_WORDS = { frontal: "Frontal", left_profile: "Left profile", right_profile: "Right profile", smt: "Scar/mark/tattoo" };
// What the officer says before a profile: the left profile shows the subject's left side, so they turn
// to their own right (and the mirror for the right profile). Auto-capture waits until the officer has
// said it and pressed "Subject has turned", then counts down while the turned pose holds.
const TURN_PROMPTS = {
  left_profile: "Ask the subject to turn to their right, so their left side faces the camera.",
  right_profile: "Ask the subject to turn to their left, so their right side faces the camera.",
};
const POLL_MS = 250;
const QUEUE_POLL_MS = 5000;
const ALARM_POLL_MS = 15000;
const ALARM_TITLES = {
  offline: "Offline", queue_growing: "Queue growing", disk_low: "Disk low", queue_full: "Queue full",
  broker_refusing: "Delivery refused", gallery_refusing: "Delivery refused", record_rejected: "Booking refused",
  record_unsendable: "Booking not sendable", ack_conflict: "Conflicting answers", audit_refused: "Activity log refused",
  audit_conflict: "Activity log mismatch", key_rotation_failed: "Key change failed",
};

const ui = {
  me: null,
  screen: null,
  want: "booking",        // where to go after signing in
  data: null,             // the last /api/v1/booking answer
  pollTimer: null,
  queueTimer: null,
  alarmTimer: null,
  previewRunning: false,
  previewUrl: null,
  reviewKey: null,
  busy: false,
  auto: true,             // the officer's auto-capture preference for face views
  prompted: new Set(),    // "booking:pose" of profiles whose turn the officer has asked for
  autoFrom: null,         // the restored booking whose armed view set `auto`
  lastAction: 0,          // Date.now() of the last officer action the station counted (idle lock)
  idleTimer: null,
  toastTimer: null,
  idleAsking: false,
  locked: false,          // the last sign-out was the idle lock: say "Booking kept" after signing in
};

function promptKey(pose) {
  const b = ui.data && ui.data.booking;
  return `${b ? b.booking_number : ""}:${pose}`;
}

function awaitingTurn(live) {
  return Boolean(TURN_PROMPTS[live.pose]) && ui.auto && !ui.prompted.has(promptKey(live.pose));
}

class ApiError extends Error {
  constructor(message, code, status, detail) {
    super(message);
    this.code = code;
    this.status = status;
    this.detail = detail;   // the technical text behind the "Details" line
  }
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-Booking-Station": "1" }, credentials: "same-origin", cache: "no-store" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (e) {
    throw new ApiError("The station does not answer. Check that it is running, then try again.", "network", 0);
  }
  // The station counts every officer request but a poll as activity, refused or not (not a failed sign-in).
  if (method !== "GET" && res.status !== 401 && res.status !== 403) noteAction();
  let data = null;
  if (res.status !== 204) {
    try { data = await res.json(); } catch (e) { data = null; }
  }
  if (!res.ok) {
    const err = new ApiError((data && data.error) || "The station could not do that. Try again.",
      data && data.code, res.status, (data && data.detail) || `${(data && data.code) || "http"} ${res.status}`);
    if (res.status === 401 && (err.code === "signed_out" || err.code === "session_locked")) {
      signedOut(err.code === "session_locked" ? err.message : "", err.code === "session_locked");
    }
    throw err;
  }
  return data;
}

// --- screens -------------------------------------------------------------------------------------------

function show(name) {
  for (const s of document.querySelectorAll(".screen")) s.hidden = s.id !== `screen-${name}`;
  ui.screen = name;
  $("nav").hidden = !ui.me;
  $("nav-booking").setAttribute("aria-current", name === "queue" || name === "admin" ? "false" : "page");
  $("nav-queue").setAttribute("aria-current", name === "queue" ? "page" : "false");
  $("nav-admin").setAttribute("aria-current", name === "admin" ? "page" : "false");
  $("nav-admin").hidden = !(ui.me && ui.me.role === "station-admin");
  if (name === "admin") openAdmin();
  if (name === "booking") startPreview(); else stopPreview();
  if (name === "queue") startQueuePolling(); else stopQueuePolling();
}

// A message in plain words; `detail` (the technical code) goes behind a collapsed "Details" line.
function message(el, text, info, detail) {
  el.replaceChildren();
  if (text) {
    const words = document.createElement("span");
    words.className = "message-text";
    words.textContent = text;
    el.append(words);
    if (detail) el.append(detailsLine(detail));
  }
  el.hidden = !text;
  el.classList.toggle("info", Boolean(info));
  if (text && el.closest(".panel-scroll")) el.scrollIntoView({ block: "nearest" });
}

function detailsLine(detail) {
  const more = document.createElement("details");
  more.className = "message-details";
  const summary = document.createElement("summary");
  summary.textContent = "Details";
  const code = document.createElement("code");
  code.textContent = detail;
  more.append(summary, code);
  return more;
}

function problem(el, err) {
  message(el, err.message, false, err.status ? err.detail : "");
}

function signedOut(reason, locked) {
  ui.me = null;
  ui.locked = Boolean(locked);
  stopIdleWatch();
  $("handover-dialog").hidden = true;
  stopPolling();
  stopQueuePolling();
  stopPreview();
  clearInterval(ui.alarmTimer);
  ui.alarmTimer = null;
  $("top-booking").hidden = true;
  $("nav-alarm").hidden = true;
  if (ui.screen && ui.screen !== "signin") ui.want = ui.screen === "queue" ? "queue" : "booking";
  show("signin");
  message($("signin-message"), reason, true);
  $("signin-pin").value = "";
  $("signin-code").value = "";
  $("signin-officer").focus();
}

async function signedIn(me) {
  ui.me = me;
  $("officer-name").textContent = me.officer_id;
  $("station-id").textContent = me.station_id;
  if (!$("start-agency").value) $("start-agency").value = me.default_agency || "";
  startIdleWatch(me);
  startPolling();
  startAlarmPolling();
  await refresh();
  announceKept();
  if (ui.want === "queue") show("queue");
  else routeBooking();
}

// --- booking state -------------------------------------------------------------------------------------

function startPolling() {
  stopPolling();
  const tick = async () => {
    try { await refresh(); } catch (e) { /* shown by api() where it matters */ }
    if (ui.me) ui.pollTimer = setTimeout(tick, POLL_MS);
  };
  ui.pollTimer = setTimeout(tick, POLL_MS);
}

function stopPolling() {
  clearTimeout(ui.pollTimer);
  ui.pollTimer = null;
}

async function refresh() {
  if (!ui.me) return;
  const data = await api("GET", "/api/v1/booking");
  apply(data);
}

function apply(data) {
  ui.data = data;
  renderStart(data);
  const b = data.booking;
  renderHandover(b);
  $("top-booking").hidden = !b;
  if (b) renderTopBooking(b);
  if (ui.screen === "booking" || ui.screen === "review" || ui.screen === "start") routeBooking();
}

function routeBooking() {
  const b = ui.data && ui.data.booking;
  if (!b) {
    if (ui.screen !== "start") show("start");
    return;
  }
  if (b.live.phase === "review" && b.review) {
    if (ui.screen !== "review") show("review");
    renderReview(b);
    renderPriorCheck(b.prior_check);
  } else {
    if (ui.screen !== "booking") show("booking");
    renderBooking(b);
  }
}

// The booking number may be shortened on a small screen, the ORI never (see .tb-ori).
function renderTopBooking(b) {
  const el = $("top-booking");
  if (el.dataset.key === `${b.booking_number}|${b.agency_ori}`) return;
  el.dataset.key = `${b.booking_number}|${b.agency_ori}`;
  const word = document.createElement("span");
  word.className = "tb-word";
  word.textContent = "Booking";
  const number = document.createElement("span");
  number.className = "tb-number";
  number.id = "top-booking-number";
  number.textContent = b.booking_number;
  const ori = document.createElement("span");
  ori.className = "tb-ori";
  ori.id = "top-booking-ori";
  ori.textContent = `\u00b7 ${b.agency_ori}`;
  el.replaceChildren(word, number, ori);
}

function renderStart(data) {
  const saved = data.last_saved;
  const box = $("saved-message");
  // The booking number is what the officer knows; the record id is for county IT (behind "Details").
  // A refusal on the start form (e.g. a number already in use) replaces the last "Saved" notice.
  if (saved && $("start-message").hidden) {
    if (box.dataset.recordId !== saved.record_id) {
      box.dataset.recordId = saved.record_id;
      message(box, `Saved: booking ${saved.booking_number} (${saved.agency_ori}) is stored and queued for ` +
        `delivery to the county gallery.`, false, `record ${saved.record_id}`);
    }
    box.hidden = false;
  } else {
    box.hidden = true;
  }
  const list = $("request-list");
  list.replaceChildren();
  for (const r of data.requests || []) {
    const li = document.createElement("li");
    const text = document.createElement("span");
    text.textContent = `${r.booking_number} (${r.agency_ori})`;
    const btn = document.createElement("button");
    btn.type = "button";
    btn.className = "btn btn-primary";
    btn.textContent = "Open";
    btn.addEventListener("click", () => openBooking(r.booking_number, r.agency_ori));
    li.append(text, btn);
    list.append(li);
  }
  $("requests").hidden = !(data.requests && data.requests.length);
}

function renderBooking(b) {
  const live = b.live;
  const accepted = b.accepted_items || [];
  for (const pose of [...POSES, "smt"]) {
    const btn = $(`pose-${pose}`);
    const items = accepted.filter((a) => a.pose === pose);
    const state = btn.querySelector(".step-state");
    btn.classList.toggle("current", live.pose === pose);
    btn.classList.toggle("done", items.length > 0 && !items.some((a) => a.override_reason));
    btn.classList.toggle("override", items.some((a) => a.override_reason));
    if (pose === "smt") {
      state.textContent = items.length ? `${items.length} taken` : (live.pose === "smt" ? "Taking now" : "Scar/mark/tattoo");
    } else if (live.pose === pose) {
      state.textContent = items.length ? "Retaking" : "Taking now";
    } else if (items.length) {
      state.textContent = items[0].override_reason ? `Kept: ${items[0].override_reason}` : "\u2713 Accepted";
      // After a hand-over, a photo taken by the officer before says whose it is.
      if (b.officer && items[0].operator_id !== b.officer) state.textContent += ` (${items[0].operator_id})`;
    } else {
      state.textContent = "Not taken";
    }
  }

  const g = $("guidance");
  const wrap = $("preview-wrap");
  let title = "";
  let text = "";
  let kind = "";
  const hasFrame = live.frame_sequence !== null && live.frame_sequence !== undefined;
  $("reconnect-btn").hidden = !live.camera_error;
  $("capture-btn").hidden = Boolean(live.camera_error);
  let detail = "";
  if (live.camera_error) {
    kind = "lost";
    title = "Camera stopped";
    text = "Accepted photos are kept. Check the camera and its cable, then press Reconnect camera.";
    detail = live.camera_error;
  } else if (live.phase === "processing") {
    title = "Processing";
    text = "Checking the photo\u2026";
  } else if (live.phase === "idle" || !live.pose) {
    const next = (b.missing || [])[0];
    title = "Choose a view";
    text = next ? `Tap ${POSE_WORDS[next]} to take it.` : "All views taken. Save the booking, or add a scar/mark/tattoo photo.";
  } else if (!hasFrame) {
    title = POSE_WORDS[live.pose] || live.pose;
    text = "Waiting for the camera\u2026";
  } else if (live.phase === "live" && awaitingTurn(live)) {
    title = POSE_WORDS[live.pose];
    text = TURN_PROMPTS[live.pose];
    detail = "Auto-capture starts when you press \u201cSubject has turned\u201d.";
  } else if (live.pose === "smt") {
    kind = "ready";
    title = "Scar / mark / tattoo";
    text = `Frame the ${live.smt_description || "mark"} and press Capture.`;
  } else if (live.ready) {
    kind = "ready";
    title = `Ready \u2013 ${POSE_WORDS[live.pose]}`;
    text = live.auto ? "Hold still: taking the photo." : "Press Capture.";
    if (live.auto && TURN_PROMPTS[live.pose]) text = "Hold the turn still: taking the photo when the count ends.";
  } else {
    kind = "failing";
    title = POSE_WORDS[live.pose] || live.pose;
    text = live.guidance.length ? live.guidance[0].message : "Adjust the subject.";
    if (live.guidance.length > 1) detail = `Then: ${live.guidance.slice(1, 3).map((h) => h.message).join(" ")}`;
  }
  g.className = `guidance ${kind}`;
  $("guidance-title").textContent = title;
  $("guidance-text").textContent = text;
  $("guidance-detail").textContent = detail;
  $("guidance-detail").hidden = !detail;
  $("preview").hidden = Boolean(live.camera_error);
  const showProgress = kind === "ready" && live.auto && live.pose !== "smt";
  const counting = showProgress && Boolean(TURN_PROMPTS[live.pose]);
  $("countdown").hidden = !counting;
  if (counting) $("countdown").textContent = String(Math.max(1, Math.ceil((live.hold_seconds || 0) * (1 - (live.progress || 0)))));
  $("turned-btn").hidden = !(live.phase === "live" && !live.camera_error && awaitingTurn(live));
  $("progress").hidden = !showProgress;
  $("progress-bar").style.width = `${Math.round((live.progress || 0) * 100)}%`;
  wrap.classList.toggle("ready", kind === "ready");
  wrap.classList.toggle("failing", kind === "failing");
  wrap.classList.toggle("lost", kind === "lost");
  $("preview-empty").hidden = hasFrame && !live.camera_error;
  if (live.camera_error) $("preview-empty").textContent = "Camera stopped";
  else $("preview-empty").textContent = "Waiting for the camera\u2026";

  renderPriorCheck(b.prior_check);
  drawFaceBox(live, kind === "ready");
  // A restored booking was armed by the station itself (auto-capture off): show its choice, once.
  if (b.restored && ui.autoFrom !== b.booking_number && live.phase === "live" && live.pose && live.pose !== "smt") {
    ui.autoFrom = b.booking_number;
    ui.auto = Boolean(live.auto);
    renderAuto();
  }
  $("capture-btn").disabled = ui.busy || live.phase !== "live" || !live.camera;
  $("save-btn").disabled = ui.busy || !b.can_save || live.phase === "processing";
}

// The booking-time check of the accepted frontal: advice for the officer, never a block. Shown on the
// booking screen and on the review screen (the next view is often being reviewed already).
function renderPriorCheck(pc) {
  for (const box of document.querySelectorAll(".prior-check")) {
    box.hidden = !pc;
    if (!pc) continue;
    box.className = `prior-check ${pc.state}${pc.priors.length ? " found" : ""}`;
    box.querySelector(".prior-check-message").textContent = pc.message;
    const list = box.querySelector(".prior-check-list");
    const key = JSON.stringify(pc.priors);
    if (list.dataset.key === key) continue;
    list.dataset.key = key;
    list.classList.toggle("with-photos", pc.priors.some((p) => p.photo));
    list.replaceChildren(...pc.priors.map((p, i) => {
      const li = document.createElement("li");
      if (p.photo) {  // only where the county's policy sends photos; the text stands alone otherwise
        const img = document.createElement("img");
        img.className = "prior-photo";
        img.alt = `Earlier photo, booking ${p.booking_number}`;
        img.addEventListener("error", () => img.remove(), { once: true });
        img.src = `/api/v1/booking/prior/${i}.jpg?r=${encodeURIComponent(pc.request_id)}`;
        li.append(img);
      }
      const text = document.createElement("span");
      text.textContent = `Booking ${p.booking_number} \u2013 ${p.ori} \u2013 ${p.captured_on}`;
      li.append(text);
      return li;
    }));
  }
}

function drawFaceBox(live, ready) {
  const box = $("face-box");
  const img = $("preview");
  if (!live.face_box || !live.frame_size || !img.naturalWidth || live.camera_error) {
    box.hidden = true;
    return;
  }
  const wrap = $("preview-wrap");
  const cw = img.clientWidth;
  const ch = img.clientHeight;
  const [fw, fh] = live.frame_size;
  const scale = Math.min(cw / fw, ch / fh);
  const ox = img.offsetLeft + (cw - fw * scale) / 2;
  const oy = img.offsetTop + (ch - fh * scale) / 2;
  const [x0, y0, x1, y1] = live.face_box;
  box.style.left = `${ox + x0 * scale}px`;
  box.style.top = `${oy + y0 * scale}px`;
  box.style.width = `${(x1 - x0) * scale}px`;
  box.style.height = `${(y1 - y0) * scale}px`;
  box.classList.toggle("ready", ready);
  box.hidden = wrap.clientWidth === 0;
}

function renderReview(b) {
  const r = b.review;
  const key = `${r.pose}:${r.mode}:${r.jpeg_bytes}:${r.width}x${r.height}`;
  if (key !== ui.reviewKey) {
    ui.reviewKey = key;
    $("review-image").src = `/api/v1/booking/review.jpg?k=${Date.now()}`;
    $("override-reason").value = "";
    message($("review-message"), "");
  }
  const v = $("review-verdict");
  const gated = r.pose === "frontal" || (r.checks || []).length > 0;  // profiles carry the profile check
  v.className = `verdict ${gated ? (r.passed ? "pass" : "fail") : "info"}`;
  v.textContent = `${r.label}: ${r.verdict}`;
  const gl = $("review-guidance");
  if (gl.dataset.key !== key) {   // rebuilt per capture only, so an opened "Details" line stays open
    gl.dataset.key = key;
    gl.replaceChildren();
    for (const h of r.guidance) {
      const li = document.createElement("li");
      li.textContent = h.message;
      if (h.detail) li.append(detailsLine(h.detail));
      gl.append(li);
    }
    for (const n of r.notes) {
      const li = document.createElement("li");
      li.textContent = n;
      gl.append(li);
    }
  }
  const checks = r.checks || [];
  const failed = checks.filter((c) => !c.passed).length;
  $("review-details").hidden = checks.length === 0;
  $("review-checks-summary").textContent =
    `Quality checks: ${checks.length - failed} passed, ${failed} failed`;
  const list = $("review-checks");
  if (list.dataset.key !== key) {
    list.dataset.key = key;
    list.replaceChildren();
    for (const c of checks) {
      const li = document.createElement("li");
      li.className = c.passed ? "pass" : "fail";
      const mark = document.createElement("span");
      mark.className = "mark";
      mark.textContent = c.passed ? "\u2713 OK" : "\u2717 FAIL";
      const label = document.createElement("span");
      label.textContent = c.not_assessed ? `${c.label} (could not be checked)` : c.label;
      li.append(mark, label);
      list.append(li);
    }
    $("review-details").open = failed > 0 || window.innerHeight >= 700;
  }
  message($("review-camera"), b.live.camera_error ? `Camera stopped: ${b.live.camera_error}` : "");
  $("override-box").hidden = !r.needs_override;
  $("accept-btn").textContent = r.needs_override ? "Keep with reason" : "Accept";
  $("accept-btn").disabled = ui.busy;
  $("retake-btn").disabled = ui.busy;
}

// --- live preview --------------------------------------------------------------------------------------

function startPreview() {
  if (ui.previewRunning) return;
  ui.previewRunning = true;
  const next = async () => {
    if (!ui.previewRunning) return;
    let delay = 100;
    try {
      const res = await fetch(`/api/v1/booking/frame.jpg?t=${Date.now()}`,
        { credentials: "same-origin", cache: "no-store", headers: { "X-Booking-Station": "1" } });
      if (res.status === 200) {
        const blob = await res.blob();
        const url = URL.createObjectURL(blob);
        const img = $("preview");
        const old = ui.previewUrl;
        img.onload = () => { if (old) URL.revokeObjectURL(old); };
        img.src = url;
        ui.previewUrl = url;
      } else {
        delay = 400;
      }
    } catch (e) {
      delay = 1000;
    }
    if (ui.previewRunning) setTimeout(next, delay);
  };
  next();
}

function stopPreview() {
  ui.previewRunning = false;
}

// --- actions -------------------------------------------------------------------------------------------

async function act(fn, msgEl) {
  if (ui.busy) return;
  ui.busy = true;
  // Until the station answers, the step buttons are off: a tap now would be dropped, so it must look so.
  for (const id of ["capture-btn", "save-btn", "accept-btn", "retake-btn"]) $(id).disabled = true;
  if (msgEl) message(msgEl, "");
  try {
    const data = await fn();
    if (data) apply(data);
    return data;
  } catch (e) {
    if (msgEl && e.status !== 401) problem(msgEl, e);
    return null;
  } finally {
    ui.busy = false;
    if (ui.data) routeBooking();
  }
}

async function openBooking(number, agency) {
  const msg = $("start-message");
  const data = await act(() => api("POST", "/api/v1/bookings", { booking_number: number, agency_ori: agency }), msg);
  if (data && data.booking) {
    $("start-number").value = "";
    await selectPose("frontal");
  }
}

async function selectPose(pose, description) {
  // A profile is not auto-captured before the officer has asked the subject to turn.
  const waiting = Boolean(TURN_PROMPTS[pose]) && !ui.prompted.has(promptKey(pose));
  const auto = pose === "smt" ? null : ui.auto && !waiting;
  return act(() => api("POST", "/api/v1/booking/pose", { pose, description, auto }), $("booking-message"));
}

async function toggleAuto() {
  ui.auto = !ui.auto;
  renderAuto();
  while (ui.busy) await new Promise((resolve) => setTimeout(resolve, 50));  // the station must hear it
  const b = ui.data && ui.data.booking;
  if (b && b.live.phase === "live" && b.live.pose && b.live.pose !== "smt") await selectPose(b.live.pose);
}

function renderAuto() {
  const btn = $("auto-btn");
  btn.setAttribute("aria-pressed", String(ui.auto));
  btn.replaceChildren("Auto", document.createElement("br"), ui.auto ? "on" : "off");
}

async function accept() {
  const reason = $("override-reason").value.trim();
  const r = ui.data && ui.data.booking && ui.data.booking.review;
  if (r && r.needs_override && !reason) {   // said here, short: the reasons are already listed above
    message($("review-message"), "This photo fails the quality standard: type the reason to keep it anyway, or press Retake.", false, "override_required");
    $("override-reason").focus();
    return null;
  }
  const data = await act(() => api("POST", "/api/v1/booking/accept", { override_reason: reason || null }),
    $("review-message"));
  if (data && data.booking) {
    const next = (data.booking.missing || [])[0];
    if (next) await selectPose(next);
  }
}

async function save() {
  $("save-btn").textContent = "Saving\u2026";
  const data = await act(() => api("POST", "/api/v1/booking/save"), $("booking-message"));
  $("save-btn").textContent = "Save booking";
  if (data && data.record_id) show("start");
}

// --- queue ---------------------------------------------------------------------------------------------

function startQueuePolling() {
  stopQueuePolling();
  const tick = async () => {
    try { renderQueue(await api("GET", "/api/v1/queue")); } catch (e) { /* signed out or offline */ }
    if (ui.screen === "queue" && ui.me) ui.queueTimer = setTimeout(tick, QUEUE_POLL_MS);
  };
  tick();
}

function stopQueuePolling() {
  clearTimeout(ui.queueTimer);
  ui.queueTimer = null;
}

function startAlarmPolling() {
  clearInterval(ui.alarmTimer);
  const tick = async () => {
    try { renderAlarmPill(await api("GET", "/api/v1/queue")); } catch (e) { /* ignore */ }
  };
  tick();
  ui.alarmTimer = setInterval(tick, ALARM_POLL_MS);
}

function renderAlarmPill(q) {
  $("nav-alarm-count").textContent = String(q.alarms.length);
  $("nav-alarm").hidden = q.alarms.length === 0;
  $("nav-alarm").title = q.alarms.map((a) => a.message).join("\n");
}

function hhmm(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false });
}

function renderQueue(q) {
  renderAlarmPill(q);
  const alarms = $("alarms");
  alarms.replaceChildren();
  for (const a of q.alarms) {
    const div = document.createElement("div");
    div.className = "alarm";
    div.setAttribute("role", "alert");
    div.dataset.alarm = a.name;
    const title = document.createElement("strong");
    title.textContent = `${ALARM_TITLES[a.name] || a.name.replace(/_/g, " ")}: `;
    div.append(title, a.message);
    if (a.detail) div.append(detailsLine(a.detail));
    alarms.append(div);
  }
  $("count-pending").textContent = String(q.counts.pending || 0);
  $("count-delivered").textContent = String(q.counts.delivered || 0);
  $("count-rejected").textContent = String(q.counts.rejected || 0);
  $("last-contact").textContent = q.last_contact_text;
  const body = $("queue-body");
  const opened = new Set([...body.querySelectorAll("tr")]   // Details lines stay open across refreshes
    .filter((tr) => tr.querySelector("details[open]")).map((tr) => tr.dataset.booking));
  body.replaceChildren();
  for (const row of q.today) {
    const tr = document.createElement("tr");
    tr.dataset.booking = row.booking_number;
    const num = document.createElement("td");
    const strong = document.createElement("strong");
    strong.textContent = row.booking_number;
    const agency = document.createElement("span");
    agency.className = "state-detail";
    agency.textContent = row.agency_ori;
    num.append(strong, agency);
    const when = document.createElement("td");
    when.textContent = hhmm(row.saved_at);
    const st = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = `state state-${row.state}`;
    badge.textContent = { pending: "Waiting", delivered: "Delivered", rejected: "Rejected" }[row.state] || row.state;
    const detail = document.createElement("span");
    detail.className = "state-detail";
    if (row.state === "rejected") detail.textContent = row.reject_reason || "";
    else if (row.state === "delivered") detail.textContent = `confirmed ${hhmm(row.delivered_at)}`;
    else detail.textContent = row.attempts ? `${row.attempts} attempt(s)` : "not sent yet";
    if (row.state === "pending" && row.last_error_words) {
      const more = detailsLine(row.last_error);
      more.open = opened.has(row.booking_number);
      detail.append(document.createElement("br"), row.last_error_words, more);
    }
    st.append(badge, detail);
    tr.append(num, when, st);
    body.append(tr);
  }
  $("queue-empty").hidden = q.today.length > 0;
  $("queue-table").hidden = q.today.length === 0;
}

// --- wiring --------------------------------------------------------------------------------------------

function wire() {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const msg = $("signin-message");
    message(msg, "");
    $("signin-submit").disabled = true;
    try {
      const me = await api("POST", "/api/v1/session", {
        officer_id: $("signin-officer").value.trim(), pin: $("signin-pin").value, code: $("signin-code").value.trim(),
      });
      $("signin-pin").value = "";
      $("signin-code").value = "";
      await signedIn(me);
    } catch (e) {
      message(msg, e.message);
      $("signin-pin").value = "";
      $("signin-code").value = "";
    } finally {
      $("signin-submit").disabled = false;
    }
  });
  $("start-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    openBooking($("start-number").value.trim(), $("start-agency").value.trim().toUpperCase());
  });
  for (const pose of POSES) $(`pose-${pose}`).addEventListener("click", () => selectPose(pose));
  $("pose-smt").addEventListener("click", () => {
    $("smt-description").value = "";
    message($("smt-message"), "");
    $("smt-dialog").hidden = false;
    $("smt-description").focus();
  });
  $("smt-cancel").addEventListener("click", () => { $("smt-dialog").hidden = true; });
  $("smt-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = await act(() => api("POST", "/api/v1/booking/pose",
      { pose: "smt", description: $("smt-description").value.trim() }), $("smt-message"));
    if (data) $("smt-dialog").hidden = true;
  });
  $("capture-btn").addEventListener("click", () => act(() => api("POST", "/api/v1/booking/capture"), $("booking-message")));
  $("reconnect-btn").addEventListener("click", () => act(() => api("POST", "/api/v1/booking/camera"), $("booking-message")));
  $("save-btn").addEventListener("click", save);
  $("turned-btn").addEventListener("click", () => {
    const b = ui.data && ui.data.booking;
    const pose = b && b.live.pose;
    if (!TURN_PROMPTS[pose]) return;
    ui.prompted.add(promptKey(pose));
    selectPose(pose);
  });
  $("auto-btn").addEventListener("click", toggleAuto);
  $("discard-btn").addEventListener("click", () => {
    $("discard-reason").value = "";
    message($("discard-message"), "");
    $("discard-dialog").hidden = false;
  });
  $("discard-cancel").addEventListener("click", () => { $("discard-dialog").hidden = true; });
  $("discard-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const data = await act(() => api("POST", "/api/v1/booking/discard", { reason: $("discard-reason").value.trim() }),
      $("discard-message"));
    if (data) $("discard-dialog").hidden = true;
  });
  $("retake-btn").addEventListener("click", () => act(() => api("POST", "/api/v1/booking/retake"), $("review-message")));
  $("accept-btn").addEventListener("click", accept);
  $("nav-booking").addEventListener("click", () => { ui.want = "booking"; routeBooking(); if (!ui.data || !ui.data.booking) show("start"); });
  $("nav-queue").addEventListener("click", () => { ui.want = "queue"; show("queue"); });
  wirePresence();   // presence.js: idle warning, hand-over
  wireOfficers();   // officers.js: the station admin's screen, the number keypad
  $("nav-alarm").addEventListener("click", () => { ui.want = "queue"; show("queue"); });
  $("nav-signout").addEventListener("click", async () => {
    try { await api("DELETE", "/api/v1/session"); } catch (e) { /* signed out anyway */ }
    ui.want = "booking";
    signedOut("");
  });
  window.addEventListener("resize", () => { if (ui.data && ui.data.booking && ui.screen === "booking") renderBooking(ui.data.booking); });
}

async function boot() {
  wire();
  try {
    const health = await api("GET", "/api/v1/health");
    $("station-id").textContent = health.station_id;
  } catch (e) { /* shown when signing in */ }
  try {
    const me = await api("GET", "/api/v1/session");
    await signedIn(me);
  } catch (e) {
    if (!ui.me) signedOut("");
  }
}

document.addEventListener("DOMContentLoaded", boot);
