// Keyboard-first ranking for the labelling app, and the active-time clock.
// Keys act by clicking the same controls a mouse would, so both paths run the same server code.
(() => {
  const IDLE_MS = __IDLE_MS__;
  const SKIP_REASONS = __SKIP_REASONS__;
  let lastActivity = Date.now();
  let selected = 0;
  let skipMode = false;
  let shownItem = "";
  const activeMs = {};  // item id -> milliseconds of activity while it was on screen

  const $ = (sel) => document.querySelector(sel);
  const fieldValue = (id) => {
    const el = $(`#${id} textarea, #${id} input`);
    return el ? el.value : "";
  };
  const itemId = () => fieldValue("rlhf-item");
  const columns = () => [...document.querySelectorAll(".rlhf-response")].filter((c) => c.offsetParent !== null);

  ["keydown", "mousedown", "mousemove", "wheel", "touchstart", "scroll"].forEach((ev) =>
    document.addEventListener(ev, () => { lastActivity = Date.now(); }, { passive: true, capture: true }));

  // A new item starts with the first response selected (checked before every key, so fast typing is safe).
  function syncItem() {
    const id = itemId();
    if (id !== shownItem) { shownItem = id; select(0); setSkipMode(false); }
    return id;
  }

  // Count time for the item on screen while the tab is visible and someone touched a key or the mouse lately.
  setInterval(() => {
    const id = syncItem();
    if (id && document.visibilityState === "visible" && Date.now() - lastActivity < IDLE_MS) {
      activeMs[id] = (activeMs[id] || 0) + 250;
    }
  }, 250);
  window.rlhfActiveMs = () => activeMs[itemId()] || 0;

  function select(i) {
    const cols = columns();
    if (!cols.length) return;
    selected = Math.max(0, Math.min(i, cols.length - 1));
    cols.forEach((c, j) => c.classList.toggle("rlhf-selected", j === selected));
  }

  function rankOf(i) {
    const checked = document.querySelector(`#rlhf-rank-${i} input:checked`);
    return checked ? checked.value : null;
  }

  function setRank(i, rank) {
    const input = document.querySelector(`#rlhf-rank-${i} input[value="${rank}"]`);
    if (input) { input.click(); return true; }
    return false;
  }

  function click(id) {
    const el = document.getElementById(id);
    const target = el && (el.tagName === "BUTTON" ? el : el.querySelector("button, input"));
    if (target) target.click();
  }

  function setSkipMode(on) {
    skipMode = on;
    document.body.classList.toggle("rlhf-skip-mode", on);
    if (on) $("#rlhf-skip-box")?.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const typing = e.target.closest && e.target.closest("textarea, input[type=text], input:not([type]), select, [contenteditable=true]");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      if (e.key === "Enter" && !e.shiftKey && e.target.closest("#rlhf-comment")) { e.preventDefault(); e.target.blur(); click("rlhf-submit"); }
      if (e.key === "Enter" && !e.shiftKey && e.target.closest("#rlhf-skip-other")) { e.preventDefault(); e.target.blur(); click("rlhf-skip"); }
      return;
    }
    syncItem();
    const cols = columns();
    if (skipMode) {
      if (e.key === "Escape") { setSkipMode(false); e.preventDefault(); return; }
      const n = parseInt(e.key, 10);
      if (n >= 1 && n <= SKIP_REASONS.length) {
        // Choosing a reason skips at once (the server does it on the radio's input event); "Other" asks for words.
        const input = document.querySelector(`#rlhf-skip-reason input[value="${CSS.escape(SKIP_REASONS[n - 1])}"]`);
        if (input) input.click();
        if (SKIP_REASONS[n - 1] === "Other") { $("#rlhf-skip-other textarea, #rlhf-skip-other input")?.focus(); }
        setSkipMode(false);
        e.preventDefault();
      }
      return;
    }
    const key = e.key;
    if (/^[1-8]$/.test(key) && cols.length) {
      if (setRank(selected, key)) select(selected + 1);
      e.preventDefault();
    } else if (key === "=" && cols.length && selected > 0) {
      const previous = rankOf(selected - 1);
      if (previous && setRank(selected, previous)) select(selected + 1);
      e.preventDefault();
    } else if (key === "ArrowRight") { select(selected + 1); e.preventDefault(); }
    else if (key === "ArrowLeft") { select(selected - 1); e.preventDefault(); }
    else if (key === "Enter") { click("rlhf-submit"); e.preventDefault(); }
    else if (key === "x") { click("rlhf-allbad"); e.preventDefault(); }
    else if (key === "c") { $("#rlhf-comment textarea, #rlhf-comment input")?.focus(); e.preventDefault(); }
    else if (key === "s") { setSkipMode(true); e.preventDefault(); }
    else if (key === "u") { click("rlhf-undo"); e.preventDefault(); }
  });
})();
