// Booking station officer UI: the station admin's Officers screen (enrolment with an authenticator QR code)
// and the on-screen number keypad for PIN and code fields. Loaded after app.js, whose globals ($, ui, api,
// message, problem, show) it uses; app.js's wire() calls wireOfficers().
"use strict";

// --- officers (station admin) -------------------------------------------------------------------------

async function openAdmin() {
  showEnrolForm();
  await loadOfficers();
}

async function loadOfficers() {
  try {
    const data = await api("GET", "/api/v1/admin/officers");
    $("pin-rule").textContent = data.pin_rule;
    const list = $("officer-list");
    list.replaceChildren();
    for (const o of data.officers) {
      const li = document.createElement("li");
      const text = document.createElement("span");
      const role = o.role === "station-admin" ? " \u00b7 station admin" : "";
      text.textContent = `${o.officer_id} \u2013 ${o.name}${role}${o.locked ? " \u00b7 LOCKED" : ""}`;
      li.append(text);
      list.append(li);
    }
  } catch (e) {
    problem($("enrol-message"), e);
  }
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
    const old = $("enrol-qr").src;
    if (old && old.startsWith("blob:")) URL.revokeObjectURL(old);
    $("enrol-qr").src = URL.createObjectURL(new Blob([data.qr_svg], { type: "image/svg+xml" }));
    $("enrol-result-title").textContent = `${data.officer_id} is enrolled`;
    $("enrol-issuer").textContent = `${data.issuer} (${data.officer_id})`;
    $("enrol-secret").textContent = data.totp_secret;
    for (const id of ["enrol-officer", "enrol-name", "enrol-pin"]) $(id).value = "";
    $("enrol-form").hidden = true;
    $("enrol-keypad").hidden = true;
    $("enrol-result").hidden = false;
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
  for (const pad of document.querySelectorAll(".keypad")) buildKeypad(pad);
}
