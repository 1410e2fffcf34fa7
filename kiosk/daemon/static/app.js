// The kiosk screen: renders the daemon's state (server-sent events) and sends
// key presses and actions back. The PIN pad lives in the daemon: this page never
// holds the PIN, it only posts keys and shows state.entry.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const meta = document.querySelector('meta[name="kiosk-token"]');
  const TOKEN = meta ? meta.content : "";
  const SCREENS = ["idle", "face", "result", "lockout", "session", "stepup", "unavailable"];
  const OWN_MESSAGE = ["result", "lockout", "unavailable"]; // these show state.message themselves
  const RESULTS = {
    granted: { word: "Granted", icon: "#i-check", cls: "good" },
    denied: { word: "Not granted", icon: "#i-cross", cls: "bad" },
    locked: { word: "Locked", icon: "#i-lock", cls: "warn" },
    session_locked: { word: "Session locked", icon: "#i-lock", cls: "info" },
    error: { word: "Something went wrong", icon: "#i-warn", cls: "bad" },
  };
  const KEYMAP = { Backspace: "back", Escape: "cancel", Enter: "enter", Delete: "clear" };
  const ERROR_MS = 8000;
  const PREVIEW_MS = 500;

  let state = null;
  let errText = "";
  let errTimer = 0;
  let lockDeadline = 0;
  let lockTimer = 0; // the lockout countdown's interval

  function setText(el, text) {
    // Only touch the DOM on a real change, so live regions do not repeat themselves.
    if (el.textContent !== text) el.textContent = text;
  }

  const pad2 = (n) => String(n).padStart(2, "0");

  // ---- talking to the daemon ----------------------------------------------

  let queue = Promise.resolve(); // one request at a time, so keys arrive in order

  function post(path, body) {
    queue = queue.then(() => send(path, body || {}));
    return queue;
  }

  async function send(path, body) {
    let reply;
    try {
      reply = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Kiosk-Token": TOKEN },
        body: JSON.stringify(body),
        cache: "no-store",
      });
    } catch (_) {
      showError("The terminal is not answering. Wait a moment and try again.");
      return false;
    }
    if (reply.ok) {
      if (errText) showError("");
      return true;
    }
    let text = "That did not work. Try again.";
    try {
      const data = await reply.json();
      if (data && typeof data.error === "string" && data.error) text = data.error;
    } catch (_) { /* keep the generic sentence */ }
    showError(text);
    // 403: the daemon restarted and this page's token is stale; a fresh page has the new one.
    if (reply.status === 403) setTimeout(() => location.reload(), 2000);
    return false;
  }

  function showError(text) {
    clearTimeout(errTimer);
    errText = text;
    if (text) errTimer = setTimeout(() => showError(""), ERROR_MS);
    renderMessage();
  }

  let lost = false; // the event stream broke since the page loaded

  function connect() {
    const source = new EventSource("/events");
    source.addEventListener("state", (event) => {
      let next;
      try { next = JSON.parse(event.data); } catch (_) { return; }
      $("conn").hidden = true;
      render(next);
    });
    source.onopen = () => {
      $("conn").hidden = true;
      if (lost) location.reload(); // back after a break: the daemon may have a new token
    };
    source.onerror = () => {
      lost = true;
      $("conn").hidden = false;
      if (source.readyState === EventSource.CLOSED) { // the browser gave up: start over
        source.close();
        setTimeout(connect, 3000);
      }
    };
  }

  // ---- rendering ------------------------------------------------------------

  function render(s) {
    const previous = state;
    state = s;
    const changed = !previous || previous.screen !== s.screen;
    if (changed && errText) showError("");
    document.body.dataset.screen = s.screen;
    document.body.dataset.seq = String(s.seq);
    for (const name of SCREENS) $("screen-" + name).hidden = name !== s.screen;
    renderCamera(s.camera || {});
    renderMessage();
    renderEntry(s.entry || {});
    renderChallenge(s, changed);
    renderResult(s);
    renderLockout(s);
    renderSession(s);
    setText($("unavailable-message"), s.screen === "unavailable" ? s.message : "");
    renderAlert(s);
  }

  function renderMessage() {
    const own = state && OWN_MESSAGE.includes(state.screen);
    let text = errText || (state && !own ? state.message : "");
    if (!errText && fallbackOpen()) text = "Type a code instead of the face check.";
    const el = $("message");
    setText(el, text || (state ? "" : "Connecting…"));
    el.classList.toggle("is-error", Boolean(errText));
  }

  function renderCamera(camera) {
    $("replay-banner").hidden = !camera.replay;
    setText($("camera-label"), camera.label || "");
    $("camera-banner").hidden = camera.ok !== false;
  }

  function renderEntry(entry) {
    setText($("entry-staff"), entry.staff_no || "");
    const count = Math.max(0, Math.floor(entry.pin_length || 0));
    const pin = $("entry-pin");
    setText(pin, "●".repeat(count));
    pin.setAttribute("aria-label", count ? `${count} digit${count === 1 ? "" : "s"} entered` : "empty");
    for (const [id, name] of [["field-staff", "staff_no"], ["field-pin", "pin"]]) {
      $(id).classList.toggle("active", entry.field === name);
      $(id).setAttribute("aria-current", String(entry.field === name));
    }
  }

  function renderChallenge(s, changed) {
    const on = s.screen === "face" || s.screen === "stepup";
    if (!on) {
      closeFallback(false);
      return;
    }
    const challenge = $("challenge");
    const slot = $("screen-" + s.screen).querySelector(".challenge-slot");
    if (challenge.parentNode !== slot) slot.appendChild(challenge);
    if (changed) resetPreview();
    const action = s.stepup && (s.stepup.label || s.stepup.action); // a label, if the daemon sends one
    setText($("challenge-title"), s.screen === "stepup"
      ? `Confirm it's you for ${action || "this action"}` : "Face check");
    setText($("challenge-user"), s.user ? (s.screen === "stepup" ? "Signed in as " : "For ") + s.user : "");
    setText($("prompt"), s.prompt || "");
    $("prompt").classList.toggle("long", (s.prompt || "").length > 16);
    const percent = Math.round(Math.min(1, Math.max(0, Number(s.progress) || 0)) * 100);
    $("progress").setAttribute("aria-valuenow", String(percent));
    $("progress").firstElementChild.style.width = percent + "%";
    $("fallback-open").hidden = !s.fallback;
    if (!s.fallback) closeFallback(false);
    const box = $("face-box");
    box.hidden = !s.face;
    if (s.face) {
      const f = s.face;
      Object.assign(box.style, { left: f.x * 100 + "%", top: f.y * 100 + "%", width: f.w * 100 + "%", height: f.h * 100 + "%" });
    }
  }

  function renderResult(s) {
    if (s.screen !== "result") return;
    const r = RESULTS[s.result] || RESULTS.error;
    $("result-tile").className = "tile " + r.cls;
    $("result-icon").setAttribute("href", r.icon);
    setText($("result-word"), r.word);
    setText($("result-reason"), s.message);
  }

  function renderLockout(s) {
    clearInterval(lockTimer);
    if (s.screen !== "lockout") return;
    setText($("lockout-reason"), s.message);
    lockDeadline = performance.now() + Math.max(0, Number(s.locked_for_s) || 0) * 1000;
    tickLockout();
    lockTimer = setInterval(tickLockout, 1000);
  }

  function tickLockout() {
    const left = Math.max(0, Math.ceil((lockDeadline - performance.now()) / 1000));
    setText($("countdown"), `${pad2(Math.floor(left / 60))}:${pad2(left % 60)}`);
    if (!left) clearInterval(lockTimer);
  }

  function renderSession(s) {
    const session = s.session;
    setText($("session-user"), session ? session.user : "");
    const d = session && session.since ? new Date(session.since * 1000) : null;
    setText($("session-since"), d ? `${pad2(d.getHours())}:${pad2(d.getMinutes())}` : "");
    if (d) $("session-since").setAttribute("datetime", d.toISOString());
  }

  function renderAlert(s) {
    let text = "";
    if (s.screen === "result") text = (RESULTS[s.result] || RESULTS.error).word + ". " + s.message;
    else if (s.screen === "lockout") text = "Locked. " + s.message;
    else if (s.screen === "unavailable") text = "Not available. " + s.message;
    setText($("alert"), text);
  }

  // ---- camera preview -------------------------------------------------------

  const preview = $("preview");
  let previewBusy = false;
  let previewAt = 0;

  function resetPreview() {
    // Never show the previous person's picture on a new check.
    $("camera").classList.remove("has-pic");
    preview.removeAttribute("src");
    previewBusy = false;
  }

  preview.addEventListener("load", () => {
    previewBusy = false;
    const camera = $("camera");
    if (preview.naturalWidth && preview.naturalHeight) {
      camera.style.setProperty("--ar", String(preview.naturalWidth / preview.naturalHeight));
    }
    camera.classList.add("has-pic");
  });
  preview.addEventListener("error", () => { // 204: no picture yet
    previewBusy = false;
    $("camera").classList.remove("has-pic");
  });

  setInterval(() => {
    if (document.hidden || !state || (state.screen !== "face" && state.screen !== "stepup")) return;
    if (previewBusy && performance.now() - previewAt < 5000) return;
    previewBusy = true;
    previewAt = performance.now();
    preview.src = "/preview.jpg?t=" + Date.now();
  }, PREVIEW_MS);

  // ---- fallback entry (TOTP / supervisor) -------------------------------------

  let target = null; // the input the fallback number pad types into

  function fallbackOpen() {
    return !$("fallback").hidden;
  }

  function openFallback() {
    $("fallback").hidden = false;
    $("challenge").classList.add("fb");
    showTab($("totp-form").hidden ? "sup" : "totp");
    renderMessage();
  }

  function closeFallback(refocus) {
    if (!fallbackOpen()) return;
    for (const id of ["totp-code", "sup-staff", "sup-pin"]) $(id).value = "";
    $("fallback").hidden = true;
    $("challenge").classList.remove("fb");
    renderMessage();
    if (refocus && !$("fallback-open").hidden) $("fallback-open").focus();
  }

  function showTab(which) {
    $("tab-totp").setAttribute("aria-pressed", String(which === "totp"));
    $("tab-sup").setAttribute("aria-pressed", String(which === "sup"));
    $("totp-form").hidden = which !== "totp";
    $("sup-form").hidden = which !== "sup";
    setTarget($(which === "totp" ? "totp-code" : "sup-staff"));
    target.focus();
  }

  function setTarget(input) {
    if (target) target.classList.remove("target");
    target = input;
    target.classList.add("target");
  }

  $("fallback-open").addEventListener("click", openFallback);
  for (const b of document.querySelectorAll(".fb-close")) b.addEventListener("click", () => closeFallback(true));
  $("tab-totp").addEventListener("click", () => showTab("totp"));
  $("tab-sup").addEventListener("click", () => showTab("sup"));
  for (const id of ["totp-code", "sup-staff", "sup-pin"]) $(id).addEventListener("focus", () => setTarget($(id)));

  $("fpad").addEventListener("mousedown", (e) => e.preventDefault()); // keep the caret where it is
  $("fpad").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-input]");
    if (!button || !target) return;
    const key = button.dataset.input;
    if (key === "clear") target.value = "";
    else if (key === "back") target.value = target.value.slice(0, -1);
    else if (target.value.length < (target.maxLength > 0 ? target.maxLength : 16)) target.value += key;
  });

  $("totp-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const code = $("totp-code").value.replace(/\s+/g, "");
    $("totp-code").value = "";
    if (/^[0-9]{6}$/.test(code)) post("/api/totp", { code });
    else showError("Enter the 6-digit code from your authenticator app.");
  });

  $("sup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const staffNo = $("sup-staff").value.trim();
    const pin = $("sup-pin").value;
    $("sup-staff").value = "";
    $("sup-pin").value = "";
    setTarget($("sup-staff"));
    if (staffNo && pin) post("/api/supervisor", { staff_no: staffNo, pin });
    else showError("Enter the supervisor's staff number and PIN.");
  });

  // ---- buttons and keyboard -----------------------------------------------------

  $("screen-idle").addEventListener("mousedown", (e) => { // taps must not steal focus from the page
    if (e.target.closest("button[data-key]")) e.preventDefault();
  });
  $("screen-idle").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-key]");
    if (button) post("/api/key", { key: button.dataset.key });
  });
  $("cancel").addEventListener("click", () => post("/api/cancel"));
  $("lock").addEventListener("click", () => post("/api/lock"));
  for (const b of document.querySelectorAll(".dismiss")) b.addEventListener("click", () => post("/api/dismiss"));

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.altKey || e.metaKey) return;
    if (fallbackOpen()) { // the fallback form is typed locally; Escape leaves it
      if (e.key === "Escape") closeFallback(true);
      return;
    }
    if (e.target.closest && e.target.closest("input, textarea, select")) return;
    // A USB number pad sends Numpad0-9 whatever its Num Lock says (often off at boot).
    const numpad = /^Numpad([0-9])$/.exec(e.code);
    const key = numpad ? numpad[1] : /^[0-9]$/.test(e.key) ? e.key : KEYMAP[e.key];
    if (!key) return;
    if (key === "enter" && e.target.closest && e.target.closest("button")) return; // activates the button
    if (e.repeat && key !== "back") return;
    e.preventDefault();
    post("/api/key", { key });
  });

  document.addEventListener("contextmenu", (e) => e.preventDefault()); // long presses on a touch screen

  connect();
})();
