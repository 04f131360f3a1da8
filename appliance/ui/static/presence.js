// Booking station officer UI: who is at the desk. The idle lock's warning and countdown, "Booking kept"
// after signing in again, and the hand-over screen when another officer signs in to an open booking.
// Loaded after app.js, whose globals ($, ui, api, act) it uses; app.js's wire() calls wirePresence().
"use strict";

const IDLE_WARN_S = 60;         // the idle lock is announced this long before (half the idle time if shorter)
const TOAST_MS = 8000;

// --- idle lock, "booking kept", hand-over -------------------------------------------------------------
// The station locks a session after `idle_seconds` without an officer action (its polls do not count). The
// page counts down the same time from the last action the station saw and warns before the lock.

function noteAction() {
  ui.lastAction = Date.now();
  $("idle-warning").hidden = true;
}

function startIdleWatch(me) {
  stopIdleWatch();
  const left = typeof me.idle_left_seconds === "number" ? me.idle_left_seconds : me.idle_seconds;
  ui.lastAction = Date.now() - (me.idle_seconds - left) * 1000;
  ui.idleTimer = setInterval(idleTick, 1000);
  idleTick();
}

function stopIdleWatch() {
  clearInterval(ui.idleTimer);
  ui.idleTimer = null;
  $("idle-warning").hidden = true;
}

function idleTick() {
  if (!ui.me) return;
  const total = ui.me.idle_seconds;
  const left = Math.ceil(total - (Date.now() - ui.lastAction) / 1000);
  const warnAt = Math.min(IDLE_WARN_S, total / 2);
  const warn = $("idle-warning");
  if (left > warnAt) {
    warn.hidden = true;
    return;
  }
  if (left <= 0) {
    // The station locks now (api() then shows the sign-in); if it still counts time, follow its count.
    warn.hidden = true;
    if (!ui.idleAsking) {
      ui.idleAsking = true;
      api("GET", "/api/v1/session").then((me) => { if (ui.me) startIdleWatch({ ...ui.me, ...me }); })
        .catch(() => {}).finally(() => { ui.idleAsking = false; });
    }
    return;
  }
  const mmss = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
  const kept = ui.data && ui.data.booking ? " The booking is kept." : "";
  $("idle-warning-text").textContent = `No activity: this screen locks in ${mmss}.${kept}`;
  warn.hidden = false;
}

function toast(text) {
  const el = $("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(ui.toastTimer);
  ui.toastTimer = setTimeout(() => { el.hidden = true; }, TOAST_MS);
}

function announceKept() {
  const b = ui.data && ui.data.booking;
  if (ui.locked && b && b.officer === ui.me.officer_id) {
    const n = (b.accepted_items || []).length;
    toast(`Booking kept: ${b.booking_number}, ${n} photo${n === 1 ? "" : "s"} accepted. Carry on.`);
  }
  ui.locked = false;
}

// Another officer signed in while a booking is open: say whose it is before anything is taken.
function renderHandover(b) {
  const need = Boolean(b && ui.me && b.officer && b.officer !== ui.me.officer_id);
  const dialog = $("handover-dialog");
  if (!need) {
    dialog.hidden = true;
    return;
  }
  const n = (b.accepted_items || []).length;
  $("handover-text").textContent = `Booking ${b.booking_number} (${b.agency_ori}) is being taken by ${b.officer}, ` +
    `with ${n} photo${n === 1 ? "" : "s"} accepted. If you continue, the photos already taken stay under ` +
    `${b.officer}; the ones you take are recorded under ${ui.me.officer_id}.`;
  $("handover-take").textContent = `Continue as ${ui.me.officer_id}`;
  dialog.hidden = false;
}

function wirePresence() {
  $("idle-stay").addEventListener("click", () => api("POST", "/api/v1/session/alive").catch(() => {}));
  $("handover-take").addEventListener("click", () => act(() => api("POST", "/api/v1/booking/handover"), null));
  $("handover-signout").addEventListener("click", () => $("nav-signout").click());
}
