// Caption page: send the photo to /api/captions (cookie session + CSRF header), show the result,
// add it to History at once; feedback buttons and an in-page editor for each caption.
(function () {
  "use strict";
  function esc(s) { var d = document.createElement("div"); d.textContent = s; return d.innerHTML; }
  function highlight(text, names) {
    var html = esc(text);
    names.forEach(function (n) {
      var tag = esc("<" + n + ">");
      html = html.split(tag).join("<mark>" + tag + "</mark>");
    });
    return html;
  }
  async function api(method, url, body) {
    var opts = { method: method, headers: { "X-CSRF-Token": window.repicCsrf() }, credentials: "same-origin" };
    if (body instanceof FormData) { opts.body = body; }
    else if (body) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    var r = await fetch(url, opts);
    var data = await r.json().catch(function () { return {}; });
    if (!r.ok) { throw new Error(data.detail || ("HTTP " + r.status)); }
    return data;
  }
  function showResult(data, file) {
    var box = document.getElementById("caption-result");
    box.hidden = false;
    var names = data.concepts.map(function (c) { return c.name; });
    document.getElementById("caption-text").innerHTML = highlight(data.caption, names);
    var version = data.model_version ? (data.model_version.name || data.model_version.adapter || "base model") : "base model";
    document.getElementById("caption-meta").textContent = version + " · " + data.backend +
      (data.tiny_model ? " · tiny test model" : "") + " · " + Math.round(data.timings_ms.total) + " ms";
    var chips = document.getElementById("caption-chips");
    chips.innerHTML = "";
    data.concepts.forEach(function (c) {
      var chip = document.createElement("span");
      chip.className = "chip concept-chip";
      chip.innerHTML = '<img src="/api/concepts/' + c.id + '/images/' + c.image_id + '/thumbnail" width="24" height="24" alt=""> &lt;' +
        esc(c.name) + "&gt; " + (c.pinned ? "pinned" : (c.score === null ? "" : c.score.toFixed(2)));
      chips.appendChild(chip);
    });
    var wrap = document.getElementById("caption-photo");
    wrap.innerHTML = "";
    var img = document.createElement("img");
    img.alt = "the captioned photo";
    img.src = data.image_url;
    img.onload = function () {
      var sx = img.clientWidth / data.width, sy = img.clientHeight / data.height;
      data.concepts.forEach(function (c) {
        if (!c.box) { return; }
        var b = document.createElement("div");
        b.className = "box";
        b.style.left = (c.box[0] * sx) + "px"; b.style.top = (c.box[1] * sy) + "px";
        b.style.width = ((c.box[2] - c.box[0]) * sx - 6) + "px"; b.style.height = ((c.box[3] - c.box[1]) * sy - 6) + "px";
        b.innerHTML = "<span>&lt;" + esc(c.name) + "&gt;</span>";
        wrap.appendChild(b);
      });
    };
    wrap.appendChild(img);
  }
  // History: rows come from the page's <template> (the server renders the same markup).
  function historyRow(data) {
    var row = document.getElementById("history-row-template").content.firstElementChild.cloneNode(true);
    row.dataset.captionId = data.id;
    row.querySelector("img").src = data.image_url;
    row.querySelector(".caption-body").textContent = data.edited_caption || data.caption;
    row.querySelector(".tiny-chip").hidden = !data.tiny_model;
    var concepts = row.querySelector(".caption-concepts");
    data.concepts.forEach(function (c) {
      var chip = document.createElement("span");
      chip.className = "chip";
      chip.textContent = "<" + c.name + ">";
      concepts.appendChild(chip);
    });
    row.querySelector(".state").textContent = data.feedback;
    return row;
  }
  function addToHistory(data) {
    var table = document.getElementById("history");
    // Later pages hold older captions: a new one belongs on the first.
    if (!table || table.dataset.page !== "1") { return; }
    var body = table.tBodies[0];
    body.insertBefore(historyRow(data), body.firstChild);
    var count = document.getElementById("history-count");
    if (count) { count.textContent = String(Number(count.textContent) + 1); }
  }

  async function sendFeedback(row, body) {
    var data = await api("PATCH", "/api/captions/" + row.dataset.captionId, body);
    row.querySelector(".state").textContent = data.feedback;
    // Any verdict but "edited" drops an edit: the model's caption is shown again.
    row.querySelector(".caption-body").textContent = data.edited_caption || data.caption;
    return data;
  }
  function feedbackError(row, message) {
    var state = row.querySelector(".state");
    state.textContent = "not saved: " + message;
  }

  // The in-page editor: a textarea holding the caption's text only (never the chips).
  function openEditor(row, editButton) {
    if (row.querySelector(".caption-editor")) { row.querySelector(".caption-editor textarea").focus(); return; }
    var body = row.querySelector(".caption-body");
    var form = document.getElementById("caption-editor-template").content.firstElementChild.cloneNode(true);
    var text = form.querySelector("textarea");
    text.value = body.textContent;
    body.hidden = true;
    body.parentNode.insertBefore(form, body.nextSibling);
    function close() {
      form.remove();
      body.hidden = false;
      editButton.focus();
    }
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var edited = text.value.trim();
      if (!edited) { text.focus(); return; }
      try {
        await sendFeedback(row, { feedback: "edited", edited_caption: edited });
        close();
      } catch (e) { feedbackError(row, e.message); }
    });
    form.querySelector("[data-editor=cancel]").addEventListener("click", close);
    form.addEventListener("keydown", function (ev) {
      if (ev.key === "Escape") { ev.preventDefault(); close(); }
    });
    text.focus();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var form = document.getElementById("caption-form");
    if (!form) { return; }
    var input = document.getElementById("caption-image");
    form.addEventListener("submit", async function (ev) {
      ev.preventDefault();
      var file = input.files[0];
      var button = document.getElementById("caption-submit");
      var err = document.getElementById("form-error");
      if (err) { err.remove(); }
      function fail(message) {
        var div = document.createElement("div");
        div.className = "flash error"; div.id = "form-error"; div.textContent = message;
        div.setAttribute("role", "alert");
        form.parentNode.insertBefore(div, form);
      }
      if (!file) { fail("Choose or drop a photo first."); input.focus(); return; }
      var fd = new FormData();
      fd.append("image", file);
      form.querySelectorAll("input[name=concept_ids]:checked").forEach(function (c) { fd.append("concept_ids", c.value); });
      var retrieval = document.getElementById("use-retrieval");
      fd.append("retrieve", retrieval ? String(retrieval.checked) : "true");
      var q = document.getElementById("caption-question").value.trim();
      if (q) { fd.append("question", q); }
      button.disabled = true; button.textContent = "Captioning…";
      try {
        var data = await api("POST", "/api/captions", fd);
        showResult(data, file);
        addToHistory(data);
      } catch (e) { fail(e.message); }
      finally { button.disabled = false; button.textContent = "Caption it"; }
    });
    document.getElementById("history").addEventListener("click", async function (ev) {
      var btn = ev.target.closest("button[data-feedback]");
      if (!btn) { return; }
      var row = btn.closest("tr");
      if (btn.dataset.feedback === "edited") { openEditor(row, btn); return; }
      try { await sendFeedback(row, { feedback: btn.dataset.feedback }); }
      catch (e) { feedbackError(row, e.message); }
    });
  });
})();
