// The annotator's page in the browser: ranking with keys or clicks, the active-time clock, and the form sent with
// each event (window.rlhf.form(), packed by the event's js hook). The server checks everything it receives. The item
// is named by an opaque handle (data-item) and its responses by their shown positions (data-responses), not by ids.
(() => {
  const IDLE_MS = __IDLE_MS__;
  const SKIP_REASONS = __SKIP_REASONS__;
  const TICK_MS = 100;
  const STRENGTH_KEYS = { m: 3, b: 2, l: 1 };  // a pair's strength: much better, better, slightly better
  const LETTERS = "ABCDEFGH";
  const activeMs = {};  // item handle -> milliseconds of activity while it was on screen
  let lastActivity = Date.now();
  const MAX_ANSWER = __MAX_ANSWER__;
  const DRAFT = "rlhf-draft:";  // localStorage key prefix: item handle -> the answer being written for it
  const DRAFT_DAYS = 7;
  const state = { item: "", ranks: [], selected: 0, allBad: false, comment: "", other: "", reason: "", skipMode: false,
                  strength: null, answer: "", answerFrom: null, answerOpen: false, unsaved: "" };

  // Answers are kept per item in this browser while they are written, so one survives a reload, a change of batch,
  // an undo that brings its item back, or an item that comes back later; drafts older than DRAFT_DAYS are dropped,
  // and all of them at logout.
  const store = (() => { try { return window.localStorage; } catch (err) { return null; } })();
  function saveDraft() {
    if (!store || !state.item) return;
    try {
      if (state.answer.trim()) {
        store.setItem(DRAFT + state.item, JSON.stringify({ answer: state.answer, from: state.answerFrom, at: Date.now() }));
      } else {
        store.removeItem(DRAFT + state.item);
      }
    } catch (err) { /* storage full or off: the answer still goes with the submit */ }
  }
  function loadDraft(id) {
    if (!store || !id) return null;
    try { return JSON.parse(store.getItem(DRAFT + id) || "null"); } catch (err) { return null; }
  }
  function draftKeys() {
    const keys = [];
    if (!store) return keys;
    for (let i = 0; i < store.length; i++) { const key = store.key(i); if (key && key.startsWith(DRAFT)) keys.push(key); }
    return keys;
  }
  function pruneDrafts() {
    const old = Date.now() - DRAFT_DAYS * 86400000;
    for (const key of draftKeys()) {
      let at = 0;
      try { at = JSON.parse(store.getItem(key) || "{}").at || 0; } catch (err) { /* unreadable: drop it */ }
      if (at < old) store.removeItem(key);
    }
  }

  const byId = (id) => document.getElementById(id);
  const view = () => byId("rlhf-view-inner");

  // A new item resets the choices; the same item re-rendered (after an error message) gets them painted back.
  function sync() {
    const v = view();
    const id = v ? v.dataset.item : "";
    if (id !== state.item) {
      const k = id ? parseInt(v.dataset.k, 10) : 0;
      // The page moved on with an error (the item expired, went to someone else, was answered in another tab):
      // an answer written for it was not saved; it stays on screen to copy until dismissed.
      const failed = document.querySelector("#rlhf-message.rlhf-msg-error");
      if (state.item && state.answer.trim() && failed) state.unsaved = state.answer;
      const draft = loadDraft(id);
      Object.assign(state, { item: id, ranks: new Array(k).fill(null), selected: 0, allBad: false, comment: "",
                             other: "", reason: "", skipMode: false, strength: null,
                             answer: draft ? String(draft.answer || "") : "",
                             answerFrom: draft && Number.isInteger(draft.from) && draft.from < k ? draft.from : null,
                             answerOpen: !!draft });
    }
    paint();
    return id;
  }

  function paint() {
    const v = view();
    document.body.classList.toggle("rlhf-skip-mode", state.skipMode);
    if (!v) return;
    v.querySelectorAll(".rlhf-card").forEach((card) => {
      const pos = parseInt(card.dataset.pos, 10);
      card.classList.toggle("rlhf-selected", pos === state.selected);
      card.querySelectorAll(".rlhf-rank").forEach((b) => {
        const on = state.ranks[pos] === parseInt(b.dataset.rank, 10);
        b.classList.toggle("rlhf-on", on);
        b.setAttribute("aria-pressed", on ? "true" : "false");
      });
    });
    paintStrength();
    const allBad = byId("rlhf-allbad");
    if (allBad) allBad.checked = state.allBad;
    paintAnswer();
    for (const [id, key] of [["rlhf-comment", "comment"], ["rlhf-skip-other", "other"], ["rlhf-answer", "answer"]]) {
      const el = byId(id);
      if (el && document.activeElement !== el && el.value !== state[key]) el.value = state[key];
    }
  }

  // The answer box: open while the annotator writes (or has written), and which response the answer started from.
  function paintUnsaved() {
    let note = byId("rlhf-unsaved");
    if (!state.unsaved) { if (note) note.remove(); return; }
    const v = view();
    if (!v) return;
    if (!note) {
      note = document.createElement("div");
      note.id = "rlhf-unsaved";
      note.className = "rlhf-msg rlhf-msg-error";
      note.setAttribute("role", "alert");
      const says = document.createElement("div");
      says.textContent = "Your answer to the previous item was not saved (see the message above). Copy it if you need it:";
      const text = document.createElement("textarea");
      text.id = "rlhf-unsaved-text";
      text.readOnly = true;
      text.rows = 4;
      text.setAttribute("aria-label", "Your unsaved answer");
      const dismiss = document.createElement("button");
      dismiss.type = "button";
      dismiss.id = "rlhf-unsaved-dismiss";
      dismiss.textContent = "Dismiss";
      note.append(says, text, dismiss);
      v.insertBefore(note, byId("rlhf-progress"));
    }
    const text = byId("rlhf-unsaved-text");
    if (text && text.value !== state.unsaved) text.value = state.unsaved;
  }

  function paintAnswer() {
    paintUnsaved();
    const box = byId("rlhf-answer-box");
    if (!box) return;
    const open = state.answerOpen || state.answer.trim() !== "";
    if (box.open !== open) box.open = open;
    const from = byId("rlhf-answer-from");
    const text = state.answerFrom === null ? "Written from scratch" : `Edited from response ${LETTERS[state.answerFrom]}`;
    if (from && from.textContent !== text) from.textContent = text;
    const count = byId("rlhf-answer-count");
    const length = state.answer.trim() ? state.answer.length : 0;
    const says = `${length.toLocaleString("en")} / ${MAX_ANSWER.toLocaleString("en")} characters`;
    if (count && count.textContent !== says) count.textContent = says;
    if (count) count.classList.toggle("rlhf-over", length > MAX_ANSWER);
  }

  const rawText = (pos) => (pos === null ? null : byId(`rlhf-raw-${pos}`)?.value ?? null);

  function openAnswer() {
    if (!state.item) return;
    state.answerOpen = true;
    paint();
    byId("rlhf-answer")?.focus();
  }

  // Start the answer from a shown response's text; an answer the annotator changed is replaced only if they confirm.
  function startFrom(pos) {
    const raw = rawText(pos);
    if (raw === null) return;
    const untouched = state.answer.trim() === "" || state.answer === rawText(state.answerFrom);
    if (!untouched && !window.confirm(`Replace your answer with response ${LETTERS[pos]}?`)) { openAnswer(); return; }
    state.answer = raw;
    state.answerFrom = pos;
    saveDraft();
    openAnswer();
  }

  // The preferred position of a pair ranked with a strict preference; null otherwise (not ranked, a tie, K > 2).
  function preferred() {
    const [a, b] = state.ranks;
    if (state.ranks.length !== 2 || !a || !b || a === b) return null;
    return a < b ? 0 : 1;
  }

  function paintStrength() {
    const bar = byId("rlhf-strength");
    if (!bar) return;
    const best = preferred();
    const who = byId("rlhf-strength-who");
    const text = best !== null ? `How much better is ${LETTERS[best]} than ${LETTERS[1 - best]}?`
      : state.ranks[0] && state.ranks[0] === state.ranks[1] ? "A tie has no strength"
      : "Rank the pair first";
    if (who && who.textContent !== text) who.textContent = text;
    bar.querySelectorAll(".rlhf-strength-choice").forEach((b) => {
      const on = state.strength === parseInt(b.dataset.strength, 10);
      b.disabled = best === null;
      b.classList.toggle("rlhf-on", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  }

  // A strength belongs to a strict preference of a pair; the same choice again clears it.
  function setStrength(value) {
    if (preferred() === null) return false;
    state.strength = state.strength === value ? null : value;
    paint();
    return true;
  }

  function select(i) {
    const k = state.ranks.length;
    if (!k) return;
    state.selected = Math.max(0, Math.min(i, k - 1));
    paint();
  }

  function setRank(pos, rank) {
    if (pos < 0 || pos >= state.ranks.length || rank < 1 || rank > state.ranks.length) return false;
    state.ranks[pos] = rank;
    if (state.ranks.length === 2 && state.ranks[0] === state.ranks[1]) state.strength = null;  // a tie has none
    paint();
    return true;
  }

  const click = (id) => byId(id)?.click();

  function skipWith(reason) {
    state.reason = reason;
    state.skipMode = false;
    click("rlhf-skip");
  }

  window.rlhf = {
    form() {
      const v = view();
      return JSON.stringify({
        item: v ? v.dataset.item : "",
        responses: v && v.dataset.responses ? v.dataset.responses.split(",").map(Number) : [],
        ranks: state.ranks,
        all_bad: state.allBad,
        comment: state.comment,
        active_ms: activeMs[state.item] || 0,
        skip_reason: state.reason,
        strength: state.strength,
        answer: state.answer,
        answer_from: state.answer.trim() ? state.answerFrom : null,
      });
    },
    state,
  };

  try { pruneDrafts(); } catch (err) { /* storage off */ }

  ["keydown", "mousedown", "mousemove", "wheel", "touchstart", "scroll"].forEach((ev) =>
    document.addEventListener(ev, () => { lastActivity = Date.now(); }, { passive: true, capture: true }));

  // Count time for the item on screen while the tab is visible and someone touched a key or the mouse lately.
  setInterval(() => {
    const id = sync();
    if (id && document.visibilityState === "visible" && Date.now() - lastActivity < IDLE_MS) {
      activeMs[id] = (activeMs[id] || 0) + TICK_MS;
    }
  }, TICK_MS);

  document.addEventListener("click", (e) => {
    const rank = e.target.closest && e.target.closest(".rlhf-rank");
    if (rank) { sync(); const pos = parseInt(rank.dataset.pos, 10); state.selected = pos; setRank(pos, parseInt(rank.dataset.rank, 10)); return; }
    const strength = e.target.closest && e.target.closest(".rlhf-strength-choice");
    if (strength) { sync(); setStrength(parseInt(strength.dataset.strength, 10)); return; }
    if (e.target.id === "rlhf-unsaved-dismiss") { state.unsaved = ""; paint(); return; }
    if (e.target.closest && e.target.closest("a[href='/logout']")) {
      for (const key of draftKeys()) store.removeItem(key);  // nothing of the annotator's stays in the browser
      return;
    }
    const start = e.target.closest && e.target.closest(".rlhf-answer-start");
    if (start) { sync(); startFrom(parseInt(start.dataset.pos, 10)); return; }
    const reason = e.target.closest && e.target.closest(".rlhf-reason");
    if (reason) {
      sync();
      if (reason.dataset.reason === "Other") { state.skipMode = false; byId("rlhf-skip-other")?.focus(); paint(); }
      else skipWith(reason.dataset.reason);
      return;
    }
    const card = e.target.closest && e.target.closest(".rlhf-card");
    if (card && !e.target.closest("a")) { sync(); select(parseInt(card.dataset.pos, 10)); }
  });

  document.addEventListener("input", (e) => {
    if (e.target.id === "rlhf-comment") state.comment = e.target.value;
    if (e.target.id === "rlhf-skip-other") state.other = e.target.value;
    if (e.target.id === "rlhf-answer") {
      state.answer = e.target.value;
      if (!state.answer.trim()) state.answerFrom = null;  // cleared: what comes next is written from scratch
      saveDraft();
      paintAnswer();
    }
  });
  // The box opened or closed with the mouse (its summary line).
  document.addEventListener("toggle", (e) => {
    if (e.target.id === "rlhf-answer-box") state.answerOpen = e.target.open;
  }, true);
  document.addEventListener("change", (e) => {
    if (e.target.id === "rlhf-allbad") state.allBad = e.target.checked;
  });

  document.addEventListener("keydown", (e) => {
    if ((e.ctrlKey || e.metaKey) && e.key === "Enter" && e.target.id === "rlhf-answer") {
      e.preventDefault();
      state.answer = e.target.value;
      e.target.blur();
      click("rlhf-submit");
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    sync();
    const typing = e.target.closest && e.target.closest("textarea, input[type=text], input:not([type]), select, [contenteditable=true]");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      if (e.key === "Enter" && !e.shiftKey && e.target.id === "rlhf-comment") { e.preventDefault(); e.target.blur(); click("rlhf-submit"); }
      if (e.key === "Enter" && e.target.id === "rlhf-skip-other") {
        e.preventDefault();
        if (state.other.trim()) { e.target.blur(); skipWith(`Other: ${state.other.trim()}`); }
      }
      return;
    }
    const key = e.key;
    if (state.skipMode) {
      if (key === "Escape") { state.skipMode = false; paint(); e.preventDefault(); return; }
      const n = parseInt(key, 10);
      if (n >= 1 && n <= SKIP_REASONS.length) {
        e.preventDefault();
        if (SKIP_REASONS[n - 1] === "Other") { state.skipMode = false; paint(); byId("rlhf-skip-other")?.focus(); }
        else skipWith(SKIP_REASONS[n - 1]);
      }
      return;
    }
    if (/^[1-8]$/.test(key) && state.ranks.length) {
      if (setRank(state.selected, parseInt(key, 10))) select(state.selected + 1);
      e.preventDefault();
    } else if (key === "=" && state.selected > 0) {
      const previous = state.ranks[state.selected - 1];
      if (previous && setRank(state.selected, previous)) select(state.selected + 1);
      e.preventDefault();
    } else if (key === "ArrowRight") { select(state.selected + 1); e.preventDefault(); }
    else if (key === "ArrowLeft") { select(state.selected - 1); e.preventDefault(); }
    else if (key === "Enter" && e.target.closest && e.target.closest("summary, a, .rlhf-answer-start, .rlhf-reason, #rlhf-unsaved button")) {
      // Enter on these does what a click does (open the answer box, start from a response, ...), not a submit
    }
    else if (key === "Enter") { click("rlhf-submit"); e.preventDefault(); }
    else if (key in STRENGTH_KEYS && state.ranks.length === 2) { setStrength(STRENGTH_KEYS[key]); e.preventDefault(); }
    else if (key === "x") { state.allBad = !state.allBad; paint(); e.preventDefault(); }
    else if (key === "c") { byId("rlhf-comment")?.focus(); e.preventDefault(); }
    else if (key === "w") { openAnswer(); e.preventDefault(); }
    else if (key === "e" && state.ranks.length) { startFrom(state.selected); e.preventDefault(); }
    else if (key === "s" && state.item) { state.skipMode = true; paint(); byId("rlhf-skip-reasons")?.scrollIntoView({ block: "nearest" }); e.preventDefault(); }
    else if (key === "u") { click("rlhf-undo"); e.preventDefault(); }
  });
})();
