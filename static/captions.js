// Caption page: send the photo to /api/captions (cookie session + CSRF header), show the result.
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
      if (!file) { alert("Choose or drop a photo first."); return; }
      var fd = new FormData();
      fd.append("image", file);
      form.querySelectorAll("input[name=concept_ids]:checked").forEach(function (c) { fd.append("concept_ids", c.value); });
      var retrieval = document.getElementById("use-retrieval");
      fd.append("retrieve", retrieval ? String(retrieval.checked) : "true");
      var q = document.getElementById("caption-question").value.trim();
      if (q) { fd.append("question", q); }
      button.disabled = true; button.textContent = "Captioning…";
      try { showResult(await api("POST", "/api/captions", fd), file); }
      catch (e) {
        var div = document.createElement("div");
        div.className = "flash error"; div.id = "form-error"; div.textContent = e.message;
        form.parentNode.insertBefore(div, form);
      } finally { button.disabled = false; button.textContent = "Caption it"; }
    });
    document.getElementById("history").addEventListener("click", async function (ev) {
      var btn = ev.target.closest("button[data-feedback]");
      if (!btn) { return; }
      var row = btn.closest("tr");
      // The cell's first node is the caption's text; chips (tiny model) follow it.
      var shown = row.querySelector(".caption-cell").firstChild;
      if (!shown || shown.nodeType !== Node.TEXT_NODE) {
        shown = row.querySelector(".caption-cell").insertBefore(document.createTextNode(""), shown);
      }
      var body = { feedback: btn.dataset.feedback };
      if (body.feedback === "edited") {
        var text = prompt("Edit the caption", shown.nodeValue.trim());
        if (!text) { return; }
        body.edited_caption = text;
      }
      var data = await api("PATCH", "/api/captions/" + row.dataset.captionId, body);
      row.querySelector(".state").textContent = data.feedback;
      // Any verdict but "edited" drops an edit: the model's caption is shown again.
      shown.nodeValue = (data.edited_caption || data.caption) + (shown.nextSibling ? " " : "");
    });
  });
})();
