// Booking station officer UI: the station admin's Officers screen (enrolment with an authenticator QR code,
// unlocking a locked account, a new authenticator code for a lost phone) and the on-screen number keypad
// for PIN and code fields. Loaded after app.js, whose globals ($, ui, api,
// message, problem, show) it uses; app.js's wire() calls wireOfficers().
"use strict";

// --- officers (station admin) -------------------------------------------------------------------------

let resetFor = null;  // the officer whose new authenticator code waits for the admin's confirmation

async function openAdmin() {
  showEnrolForm();
  message($("officer-message"), "");
  $("reset-confirm").hidden = true;
  await loadOfficers();
}

async function loadOfficers() {
  try {
    const data = await api("GET", "/api/v1/admin/officers");
    $("pin-rule").textContent = data.pin_rule;
    const list = $("officer-list");
    list.replaceChildren();
    for (const o of data.officers) list.append(officerRow(o));
  } catch (e) {
    problem($("enrol-message"), e);
  }
}

// One account: who, role, lock state, and what the admin can do for it (unlock when locked; a new
// authenticator code always, after a confirmation, since the old one stops working at once).
function officerRow(o) {
  const li = document.createElement("li");
  li.dataset.officer = o.officer_id;
  const text = document.createElement("span");
  const role = o.role === "station-admin" ? " \u00b7 station admin" : "";
  text.textContent = `${o.officer_id} \u2013 ${o.name}${role}${o.locked ? " \u00b7 LOCKED" : ""}`;
  li.append(text);
  if (o.locked) {
    li.append(officerButton("Unlock", `Unlock ${o.officer_id}`, "btn-ok officer-unlock",
      () => unlockOfficer(o.officer_id)));
  }
  li.append(officerButton("New code", `New authenticator code for ${o.officer_id}`, "btn-light officer-reset",
    () => askReset(o.officer_id)));
  return li;
}

function officerButton(label, spoken, classes, onClick) {
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = `btn btn-small ${classes}`;
  btn.textContent = label;
  btn.setAttribute("aria-label", spoken);  // a screen reader names whose account the button acts on
  btn.addEventListener("click", onClick);
  return btn;
}

function officerPath(id, action) {
  return `/api/v1/admin/officers/${encodeURIComponent(id)}/${action}`;
}

async function unlockOfficer(id) {
  const msg = $("officer-message");
  try {
    await api("POST", officerPath(id, "unlock"));
    message(msg, `${id} is unlocked and can sign in again.`, true);
  } catch (e) {
    problem(msg, e);
  }
  await loadOfficers();
}

function askReset(id) {
  message($("officer-message"), "");
  resetFor = id;
  $("reset-confirm-text").textContent = `Give ${id} a new authenticator code? The code in the app on the ` +
    "old phone stops working at once; the officer scans the new one before signing in again.";
  $("reset-confirm").hidden = false;
  $("reset-confirm-no").focus();
}

async function resetOfficer() {
  const id = resetFor;
  $("reset-confirm").hidden = true;
  if (!id) return;
  resetFor = null;
  try {
    const data = await api("POST", officerPath(id, "reset-totp"));
    showSecret(data, `New authenticator code for ${data.officer_id}`);
  } catch (e) {
    problem($("officer-message"), e);
  }
  await loadOfficers();
}

// The enrolment picture (a new account or a new code): QR code, issuer, the secret behind "Type it in".
function showSecret(data, title) {
  const old = $("enrol-qr").src;
  if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
  $("enrol-qr").src = URL.createObjectURL(new Blob([data.qr_svg], { type: "image/svg+xml" }));
  $("enrol-result-title").textContent = title;
  $("enrol-issuer").textContent = `${data.issuer} (${data.officer_id})`;
  $("enrol-secret").textContent = data.totp_secret;
  $("enrol-form").hidden = true;
  $("enrol-keypad").hidden = true;
  $("enrol-result").hidden = false;
  $("enrol-result").scrollIntoView({ block: "nearest" });
}

function showEnrolForm() {
  $("enrol-result").hidden = true;
  $("enrol-form").hidden = false;
  $("enrol-keypad").hidden = false;
}

async function enrol(ev) {
  ev.preventDefault();
  const msg = $("enrol-message");
  message(msg, "");
  try {
    const data = await api("POST", "/api/v1/admin/officers", {
      officer_id: $("enrol-officer").value.trim(), name: $("enrol-name").value.trim(),
      pin: $("enrol-pin").value, role: $("enrol-role").value,
    });
    for (const id of ["enrol-officer", "enrol-name", "enrol-pin"]) $(id).value = "";
    showSecret(data, `${data.officer_id} is enrolled`);
    loadOfficers();
  } catch (e) {
    problem(msg, e);
    $("enrol-pin").value = "";
    $("enrol-pin").focus();
  }
}

// --- number keypad -------------------------------------------------------------------------------------
// Types into the last focused field marked data-keypad of its form (the first one if none was focused).
// Keys act on "click", which both a tap and a mouse press give; pressing a key does not take the focus
// from the field, so the on-screen keyboard of the field (if any) stays as it was.

const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "\u232b", "0", "Next"];

function buildKeypad(pad) {
  const form = $(pad.dataset.form);
  const fields = () => [...form.querySelectorAll("[data-keypad]")];
  let target = null;
  form.addEventListener("focusin", (ev) => { if (ev.target.matches("[data-keypad]")) target = ev.target; });
  for (const key of KEYS) {
    const btn = document.createElement("button");
    btn.type = "button";
    btn.textContent = key;
    btn.dataset.key = key === "\u232b" ? "back" : key.toLowerCase();
    btn.setAttribute("aria-label", key === "\u232b" ? "Delete" : key);
    if (key === "Next") btn.className = "key-next";
    btn.addEventListener("mousedown", (ev) => ev.preventDefault());
    btn.addEventListener("click", () => pressKey(btn.dataset.key, target || fields()[0], fields, form));
    pad.append(btn);
  }
}

function pressKey(key, field, fields, form) {
  if (!field) return;
  if (key === "back") field.value = field.value.slice(0, -1);
  else if (key === "next") {
    const all = fields();
    const next = all[all.indexOf(field) + 1];
    if (next) next.focus();
    else form.requestSubmit();
    return;
  } else if (!field.maxLength || field.maxLength < 0 || field.value.length < field.maxLength) field.value += key;
  field.dispatchEvent(new Event("input", { bubbles: true }));
}

function wireOfficers() {
  $("nav-admin").addEventListener("click", () => show("admin"));
  $("enrol-form").addEventListener("submit", enrol);
  $("enrol-done").addEventListener("click", showEnrolForm);
  $("reset-confirm-yes").addEventListener("click", resetOfficer);
  $("reset-confirm-no").addEventListener("click", () => { resetFor = null; $("reset-confirm").hidden = true; });
  for (const pad of document.querySelectorAll(".keypad")) buildKeypad(pad);
}
