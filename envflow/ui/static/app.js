// envflow's web UI: the little the server-rendered pages need from the browser.
//
// - [data-refresh]: refetch this element's fragment every few seconds while the tab is visible
//   (the Runs table, a run's summary until the run has ended).
// - #output[data-events]: a run's output, replayed then live, from its server-sent events.
//   Lines are added once per animation frame, and the page keeps the newest data-keep lines,
//   offering the whole output as text, so a tab left open on a long run stays small.
// - #output-search: find text in the lines the page holds, marked, next/previous; jump to the first stderr line.
// - form[data-confirm]: ask before submitting.
// Every text from the server goes in with textContent, never as markup.
"use strict";

(function () {
  const REFRESH_MS = 3000;
  const PER_FRAME = 500;
  const FINAL = new Set((document.body.dataset.finalStates || "").split(" "));  // from envflow/states.py

  function refresher(el) {
    let busy = false;
    const timer = setInterval(async function () {
      const url = el.dataset.refresh;
      if (!url) { clearInterval(timer); return; }
      if (busy || document.hidden) return;
      busy = true;
      try {
        const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
        if (response.ok) {
          el.innerHTML = await response.text();  // a fragment the server rendered, escaped
          const summary = el.querySelector("[data-state]");
          if (summary && FINAL.has(summary.dataset.state)) delete el.dataset.refresh;
        }
      } catch (e) {
        // offline for a moment: try again at the next tick
      } finally {
        busy = false;
      }
    }, REFRESH_MS);
  }

  function follow(box) {
    const keep = Math.max(100, parseInt(box.dataset.keep, 10) || 5000);
    const status = document.getElementById("output-status");
    const trimmed = document.getElementById("output-trimmed");
    let pending = [];
    let hidden = 0;  // lines dropped from the page
    let shown = 0;  // lines in the page
    let scheduled = false;
    let ended = false;

    function countLines(items) {
      return items.filter(function (item) { return !item.note; }).length;
    }

    // Keep in `pending` only its newest `keep` lines (and the notes among them).
    function dropOldest() {
      let lines = 0;
      let cut = pending.length;
      while (cut > 0 && lines < keep) {
        cut -= 1;
        if (!pending[cut].note) lines += 1;
      }
      hidden += countLines(pending.slice(0, cut));
      pending = pending.slice(cut);
    }

    function note(text, cls) {
      pending.push({ note: text, cls: cls });
      schedule();
    }

    function schedule() {
      if (pending.length > 2 * keep) dropOldest();
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(flush);
      }
    }

    function row(item) {
      const div = document.createElement("div");
      if (item.note) {
        div.className = "note " + (item.cls || "");
        div.textContent = "» " + item.note;
        return div;
      }
      div.className = "line " + item.k + (item.p ? " partial" : "");  // tags come from the stylesheet
      div.textContent = item.t;
      return div;
    }

    function flush() {
      scheduled = false;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      dropOldest();
      // At most PER_FRAME rows a frame, so the page answers between frames however fast lines come.
      const batch = pending.slice(0, PER_FRAME);
      pending = pending.slice(batch.length);
      if (pending.length) schedule();
      const fragment = document.createDocumentFragment();
      for (const item of batch) {
        fragment.append(row(item));
        if (!item.note) shown += 1;
      }
      box.append(fragment);
      while (shown > keep && box.firstElementChild) {
        if (box.firstElementChild.classList.contains("line")) {
          shown -= 1;
          hidden += 1;
        }
        box.firstElementChild.remove();
      }
      if (hidden > 0) {
        trimmed.hidden = false;
        trimmed.textContent = hidden.toLocaleString() + " earlier lines are not shown here (the page keeps the newest " +
          keep.toLocaleString() + "): ";
        const link = document.createElement("a");
        link.href = box.dataset.download;
        link.textContent = "the whole output as text";
        trimmed.append(link);
      }
      if (atBottom) box.scrollTop = box.scrollHeight;
    }

    const source = new EventSource(box.dataset.events);
    source.onopen = function () { if (!ended) status.textContent = "live"; };
    source.onerror = function () { if (!ended) status.textContent = "reconnecting…"; };
    source.addEventListener("lines", function (e) {
      const entry = JSON.parse(e.data);
      const last = entry.t.length - 1;
      entry.t.forEach(function (text, i) {
        pending.push({ k: entry.k, t: text, p: entry.p && i === last });
      });
      schedule();
    });
    source.addEventListener("gap", function (e) { note(JSON.parse(e.data).text, "gap"); });
    source.addEventListener("problem", function (e) { note(JSON.parse(e.data).text, "gap"); });
    source.addEventListener("waiting", function (e) { note(JSON.parse(e.data).text, "waiting"); });
    source.addEventListener("end", function (e) {
      const end = JSON.parse(e.data);
      if (!end.final) {
        note("attempt " + end.attempt + " ended " + end.state + "; the run will be retried", "end");
        return;
      }
      ended = true;
      source.close();
      note("run ended " + end.state, "end state-" + end.state.toLowerCase());
      status.textContent = "ended " + end.state;
      status.dataset.state = end.state;
      const summary = document.getElementById("run-summary");
      if (summary && summary.dataset.refresh) {
        fetch(summary.dataset.refresh, { headers: { Accept: "text/html" }, credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (html) { if (html !== null) { summary.innerHTML = html; delete summary.dataset.refresh; } });
      }
    });
  }

  // Search in the lines the page holds: matches marked (built from text nodes, never markup),
  // next/previous, and a jump to the first stderr line.
  function searcher(box) {
    const input = document.getElementById("output-search");
    const count = document.getElementById("output-matches");
    if (!input) return;
    let marks = [];
    let current = -1;

    function clear() {
      for (const line of box.querySelectorAll(".line.matched")) {
        line.textContent = line.textContent;  // drops the marks, keeps the text
        line.classList.remove("matched");
      }
      marks = [];
      current = -1;
    }

    function mark(line, needle) {
      const text = line.textContent;
      const lower = text.toLowerCase();
      const parts = [];
      let at = 0;
      let found = lower.indexOf(needle, at);
      while (found >= 0) {
        parts.push(document.createTextNode(text.slice(at, found)));
        const m = document.createElement("mark");
        m.textContent = text.slice(found, found + needle.length);
        parts.push(m);
        marks.push(m);
        at = found + needle.length;
        found = lower.indexOf(needle, at);
      }
      parts.push(document.createTextNode(text.slice(at)));
      const span = document.createElement("span");  // one flex item: the line stays one run of text
      span.append(...parts);
      line.replaceChildren(span);
      line.classList.add("matched");
    }

    function show(i) {
      if (!marks.length) { count.textContent = input.value ? "no match in the lines shown" : ""; return; }
      if (current >= 0) marks[current].classList.remove("current");
      current = (i + marks.length) % marks.length;
      marks[current].classList.add("current");
      marks[current].scrollIntoView({ block: "center" });
      count.textContent = (current + 1) + " of " + marks.length;
    }

    function search() {
      clear();
      const needle = input.value.toLowerCase();
      if (needle) {
        for (const line of box.querySelectorAll(".line")) {
          if (line.textContent.toLowerCase().includes(needle)) mark(line, needle);
        }
      }
      show(0);
    }

    input.addEventListener("input", search);
    input.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { e.preventDefault(); show(current + (e.shiftKey ? -1 : 1)); }
    });
    document.getElementById("output-next").addEventListener("click", function () { show(current + 1); });
    document.getElementById("output-prev").addEventListener("click", function () { show(current - 1); });
    document.getElementById("output-first-error").addEventListener("click", function () {
      const first = box.querySelector(".line.e");
      if (first) { first.scrollIntoView({ block: "center" }); first.classList.add("current-line"); }
      else count.textContent = "no stderr line in the lines shown";
    });
  }

  document.addEventListener("submit", function (e) {
    const form = e.target;
    if (form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) e.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresher);
    const box = document.getElementById("output");
    if (box && box.dataset.events) { follow(box); searcher(box); }
  });
})();
