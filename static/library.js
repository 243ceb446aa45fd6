// Library page: import a dragged folder or chosen files (sent in parts of at most
// data-max-files files; a file over data-max-bytes is listed, never sent), start caption and
// discovery jobs, follow them with jobs.js (window.repicWatchJob, "repic:job" events) and show
// each job's counts and report; accept or dismiss a discovery suggestion; add a photo to a
// concept, delete a photo.
(function () {
  "use strict";
  const FINAL = ["succeeded", "failed", "cancelled"];
  const REASONS = { not_image: "not an image", duplicate: "duplicate", unreadable: "unreadable",
                    empty: "empty", too_large: "too large", symlink: "link, not followed",
                    not_a_file: "not a regular file", hidden: "hidden" };

  async function api(method, url, body) {
    const opts = { method: method, headers: { "X-CSRF-Token": window.repicCsrf() },
                   credentials: "same-origin" };
    if (body instanceof FormData) { opts.body = body; }
    else if (body) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
    const r = await fetch(url, opts);
    const data = r.status === 204 ? {} : await r.json().catch(() => ({}));
    if (!r.ok) { throw new Error(data.detail || ("HTTP " + r.status)); }
    return data;
  }

  function say(id, text, isError) {
    const box = document.getElementById(id);
    if (!box) return;
    box.textContent = text;
    box.className = isError ? "flash error" : (text ? "muted" : "");
  }

  function el(tag, text, cls) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (cls) node.className = cls;
    return node;
  }

  // -- job boxes ----------------------------------------------------------------------------
  const TITLES = { library_import: "Import", library_caption: "Captions", library_discover: "Discovery" };

  function counts(job) {
    const m = job.metrics || {};
    if (job.kind === "library_discover") {
      return (m.embedded || 0) + " of " + (m.photos === undefined ? "?" : m.photos) +
        " photos looked at now (the others were before), " + (m.failed_count || 0) + " failed";
    }
    if (job.kind === "library_import") {
      return (m.imported || 0) + " imported, " + (m.skipped || 0) + " skipped, " +
        (m.seen || 0) + " of " + (m.total === undefined ? "?" : m.total) + " files looked at";
    }
    return (m.captioned || 0) + " captioned, " + (m.failed_count || 0) + " failed, " +
      (m.remaining === undefined ? "?" : m.remaining) + " to go";
  }

  function report(box, job) {
    const r = job.result || {};
    const out = box.querySelector(".job-report");
    out.replaceChildren();
    let problems = [];
    if (job.kind === "library_import") {
      out.appendChild(el("p", (r.imported || 0) + " photo(s) imported, " +
        (r.skipped_count || 0) + " file(s) skipped" + (job.state === "cancelled" ? " (cancelled: import again to go on)" : "") + ".", "import-summary"));
      problems = (r.skipped || []).map((s) => s.path + ": " + (REASONS[s.reason] || s.reason) + " (" + s.detail + ")");
    } else if (job.kind === "library_discover") {
      const found = (r.suggestions || []).length;
      out.appendChild(el("p", job.state === "succeeded"
        ? found + " unnamed subject(s) found (" + (r.new || 0) + " new); " + (r.known || 0) +
          " of " + (r.crops || 0) + " crops show a concept you already named."
        : "Stopped before clustering: look again to go on.", "discover-summary"));
      problems = (r.failed || []).map((f) => (f.name || "photo " + f.photo_id) + ": " + f.error);
    } else {
      out.appendChild(el("p", (r.captioned || 0) + " photo(s) captioned" +
        (r.failed_count ? ", " + r.failed_count + " failed" : "") + ".", "caption-summary"));
      problems = (r.failed || []).map((f) => (f.name || "photo " + f.photo_id) + ": " + f.error);
    }
    if (problems.length) {
      const details = el("details");
      details.appendChild(el("summary", (job.kind === "library_import" ? "Skipped files" : "Failed photos") + " (" + problems.length + ")"));
      const list = el("ul", undefined, "job-problems");
      problems.forEach((line) => list.appendChild(el("li", line)));
      details.appendChild(list);
      out.appendChild(details);
    }
    const again = el("a", "Show the library as it is now");
    again.href = window.location.pathname + window.location.search;
    out.appendChild(again);
  }

  function follow(box) {
    box.addEventListener("repic:job", (ev) => {
      const job = ev.detail;
      box.querySelector(".job-metrics").textContent = counts(job);
      if (FINAL.includes(job.state) && !box.dataset.reported) {
        box.dataset.reported = "1";
        report(box, job);
      }
    });
  }

  function jobBox(job, where) {
    const box = document.getElementById("job-template").content.firstElementChild.cloneNode(true);
    box.dataset.jobId = job.id;
    box.dataset.kind = job.kind;
    box.querySelector(".job-title").textContent = (TITLES[job.kind] || "Job") + " · job " + job.id;
    box.querySelector(".job-progress").setAttribute("aria-label", "Progress of job " + job.id);
    box.querySelector(".job-cancel").dataset.jobCancel = job.id;
    document.getElementById(where).appendChild(box);
    follow(box);
    window.repicWatchJob(box);
    return box;
  }

  document.addEventListener("click", async (ev) => {
    const cancel = ev.target.closest && ev.target.closest(".library-job [data-job-cancel]");
    if (!cancel) return;
    cancel.disabled = true;
    try { await api("POST", "/api/jobs/" + cancel.dataset.jobCancel + "/cancel"); }
    catch (e) { cancel.disabled = false; window.alert(e.message); }
  });

  // -- import -------------------------------------------------------------------------------
  // A dropped folder arrives as entries: read them all, keeping each file's path in it.
  function readEntry(entry) {
    if (entry.isFile) {
      return new Promise((resolve) => entry.file(
        (file) => resolve([{ file: file, path: entry.fullPath.replace(/^\/+/, "") }]),
        () => resolve([])));
    }
    if (!entry.isDirectory) return Promise.resolve([]);
    const reader = entry.createReader();
    return new Promise((resolve) => {
      const all = [];
      const more = () => reader.readEntries(async (batch) => {
        if (!batch.length) {
          const nested = await Promise.all(all.map(readEntry));
          resolve(nested.flat());
          return;
        }
        all.push(...batch);
        more();
      }, () => resolve([]));
      more();
    });
  }

  async function importFiles(items) {
    const drop = document.getElementById("library-drop");
    const maxFiles = Number(drop.dataset.maxFiles), maxBytes = Number(drop.dataset.maxBytes);
    const tooBig = items.filter((x) => x.file.size > maxBytes);
    const send = items.filter((x) => x.file.size <= maxBytes);
    const parts = [];
    for (let i = 0; i < send.length; i += maxFiles) parts.push(send.slice(i, i + maxFiles));
    const allow = document.getElementById("library-allow-training").checked;
    let notice = tooBig.length
      ? tooBig.length + " file(s) over the limit of " + Math.round(maxBytes / 1048576) +
        " MB not sent: " + tooBig.map((x) => x.path).join(", ") + ". " : "";
    if (!parts.length) { say("import-status", notice || "Nothing to import.", !!notice); return; }
    try {
      for (let p = 0; p < parts.length; p++) {
        say("import-status", notice + "Sending part " + (p + 1) + " of " + parts.length +
            " (" + parts[p].length + " files)…");
        const form = new FormData();
        parts[p].forEach((x) => { form.append("files", x.file, x.file.name); form.append("paths", x.path); });
        form.append("allow_training", allow ? "true" : "false");
        const job = await api("POST", "/api/library/imports", form);
        jobBox(job, "import-jobs");
      }
      say("import-status", notice + send.length + " file(s) sent in " + parts.length +
          " part(s); the import goes on in the background.");
    } catch (e) {
      say("import-status", notice + "The import failed: " + e.message, true);
    }
  }

  function fromInput(input) {
    return Array.from(input.files).map((f) => ({ file: f, path: f.webkitRelativePath || f.name }));
  }

  function setupImport() {
    const drop = document.getElementById("library-drop");
    if (!drop) return;
    ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.add("over");
    }));
    ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => {
      e.preventDefault(); drop.classList.remove("over");
    }));
    drop.addEventListener("drop", async (e) => {
      const entries = Array.from(e.dataTransfer.items || [])
        .map((item) => item.webkitGetAsEntry && item.webkitGetAsEntry()).filter(Boolean);
      const items = entries.length
        ? (await Promise.all(entries.map(readEntry))).flat()
        : Array.from(e.dataTransfer.files).map((f) => ({ file: f, path: f.name }));
      importFiles(items);
    });
    ["library-folder", "library-files"].forEach((id) => {
      const input = document.getElementById(id);
      input.addEventListener("change", () => { importFiles(fromInput(input)); input.value = ""; });
    });
  }

  // -- captions -----------------------------------------------------------------------------
  function setupCaptions() {
    document.querySelectorAll("[data-caption]").forEach((button) => {
      button.addEventListener("click", async () => {
        const kind = button.dataset.caption;
        const body = {};
        if (kind === "new") body.only_uncaptioned = true;
        if (kind === "album") body.album = document.getElementById("caption-album").value;
        if (kind === "version") body.version_id = Number(button.dataset.version);
        say("caption-status", "");
        try {
          jobBox(await api("POST", "/api/library/caption-jobs", body), "caption-jobs");
        } catch (e) { say("caption-status", e.message, true); }
      });
    });
  }

  // -- discovery: look for unnamed subjects, accept or dismiss a suggestion -----------------
  function setupDiscovery() {
    const start = document.getElementById("discover-start");
    if (start) {
      start.addEventListener("click", async () => {
        say("discover-status", "");
        try { jobBox(await api("POST", "/api/library/discovery-jobs"), "discover-jobs"); }
        catch (e) { say("discover-status", e.message, true); }
      });
    }
    document.querySelectorAll("form.suggestion").forEach((form) => {
      const note = form.querySelector(".form-note");
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const photoIds = Array.from(form.querySelectorAll("input[name=photo_ids]:checked"))
          .map((box) => Number(box.value));
        if (!photoIds.length) { note.textContent = "Tick at least one photo of it."; return; }
        const body = { name: form.elements.name.value.trim(), photo_ids: photoIds,
                       category: form.elements.category.value.trim(),
                       description: form.elements.description.value.trim() };
        form.querySelectorAll("button").forEach((b) => { b.disabled = true; });
        try {
          const done = await api("POST", "/api/library/suggestions/" + form.dataset.suggestion + "/accept", body);
          const message = el("p", "<" + done.concept.name + "> is a concept now, with " +
            done.reference_photo_ids.length + " reference photo(s). " +
            (done.caption_job ? photoIds.length + " photo(s) are being captioned again."
                              : (done.note || "")), "flash");
          message.setAttribute("role", "status");
          const link = el("a", "Open <" + done.concept.name + ">");
          link.href = "/concepts/" + done.concept.id;
          message.appendChild(document.createTextNode(" "));
          message.appendChild(link);
          form.replaceChildren(message);
          if (done.caption_job && document.getElementById("caption-jobs")) {
            jobBox(done.caption_job, "caption-jobs");
          }
        } catch (e) {
          note.textContent = e.message;
          form.querySelectorAll("button").forEach((b) => { b.disabled = false; });
        }
      });
      form.querySelector("[data-dismiss-suggestion]").addEventListener("click", async () => {
        try {
          await api("POST", "/api/library/suggestions/" + form.dataset.suggestion + "/dismiss");
          const gone = el("p", "Dismissed: these photos will not be suggested again.", "muted");
          gone.setAttribute("role", "status");
          form.replaceChildren(gone);
        } catch (e) { note.textContent = e.message; }
      });
    });
  }

  // -- a photo's actions --------------------------------------------------------------------
  function setupPhotos() {
    document.querySelectorAll("form.add-to-concept").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        const concept = form.elements.concept_id;
        const note = form.querySelector(".form-note") || form.appendChild(el("p", "", "form-note"));
        note.setAttribute("role", "status");
        try {
          await api("POST", "/api/library/photos/" + form.dataset.photo + "/add-to-concept",
                    { concept_id: Number(concept.value) });
          note.textContent = "Added to " + concept.options[concept.selectedIndex].text + ".";
        } catch (e) { note.textContent = e.message; }
      });
    });
    document.querySelectorAll("[data-delete-photo]").forEach((button) => {
      button.addEventListener("click", async () => {
        if (!window.confirm("Delete this photo and its captions from your library?")) return;
        try {
          await api("DELETE", "/api/library/photos/" + button.dataset.deletePhoto);
          button.closest(".photo-tile").remove();
        } catch (e) { window.alert(e.message); }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".library-job[data-job-id]").forEach((box) => {
      if (box.dataset.jobId) follow(box);
    });
    setupImport();
    setupCaptions();
    setupDiscovery();
    setupPhotos();
  });
})();
