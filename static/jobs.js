// Live job progress without reloading: polls /api/jobs/{id} every 1.5 s while a job is queued
// or running, updates state/step/ETA/progress, draws loss and per-task rewards per step (axes
// fitted to the data, a text alternative beside), and when the job ends swaps its buttons for
// the links to what it made.
(function () {
  "use strict";
  const FINAL = ["succeeded", "failed", "cancelled"];
  const COLORS = { loss: "#c0392b", reward: "#2c3e50", oct: "#27ae60", vlt: "#2980b9",
                   ict: "#8e44ad", ict_multi: "#d35400" };

  function series(history) {
    const out = { loss: [], reward: [] };
    for (const row of history || []) {
      if (row.loss !== null && row.loss !== undefined) out.loss.push([row.step, row.loss]);
      if (row.reward !== null && row.reward !== undefined) out.reward.push([row.step, row.reward]);
      for (const [task, value] of Object.entries(row.reward_means || {})) {
        (out[task] = out[task] || []).push([row.step, value]);
      }
    }
    return out;
  }

  // The range of ``values``: [lo, hi] with ``pad`` of the span added on each side; a single
  // value gets a range around it, so a flat line is drawn in the middle, not on the frame.
  function extent(values, pad) {
    if (!values.length) return [0, 1];
    let lo = Math.min(...values), hi = Math.max(...values);
    if (hi === lo) {
      const d = Math.abs(lo) * 0.1 || 1;
      return [lo - d, hi + d];
    }
    const d = (hi - lo) * pad;
    // Padding never takes non-negative data (losses, rewards in [0, 1]) below zero.
    return [lo >= 0 ? Math.max(0, lo - d) : lo - d, hi + d];
  }
  const short = (v) => String(Number(v.toPrecision(3)));

  // Axes fit the data (steps reported, values seen): a loss of 0.002 is not a flat line at 0.
  function draw(canvas, job) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, left = 44, pad = 20;
    ctx.clearRect(0, 0, w, h);
    const data = series(job.history);
    const points = Object.values(data).flat();
    const steps = points.map((p) => p[0]);
    const [x0, x1] = steps.length && Math.min(...steps) !== Math.max(...steps)
      ? [Math.min(...steps), Math.max(...steps)] : extent(steps, 0);
    const [lo, hi] = extent(points.map((p) => p[1]), 0.05);
    Object.assign(canvas.dataset, { xMin: x0, xMax: x1, yMin: lo, yMax: hi });
    const x = (s) => left + (w - left - pad) * ((s - x0) / (x1 - x0));
    const y = (v) => h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo));
    ctx.strokeStyle = "#bbb"; ctx.strokeRect(left, pad, w - left - pad, h - 2 * pad);
    ctx.font = "10px sans-serif"; ctx.fillStyle = "#555";
    ctx.fillText(short(hi), 2, pad + 4); ctx.fillText(short(lo), 2, h - pad);
    ctx.fillText("step " + short(x0), left, h - 6);
    ctx.fillText("step " + short(x1), w - pad - 50, h - 6);
    let legend = left;
    for (const [name, pts] of Object.entries(data)) {
      if (!pts.length) continue;
      ctx.strokeStyle = ctx.fillStyle = COLORS[name] || "#7f8c8d";
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
      ctx.stroke();
      ctx.fillText(name, legend, 12); legend += ctx.measureText(name).width + 12;
    }
    canvas.setAttribute("aria-label", describe(data, x0, x1));
  }

  // The plot's text alternative: the range of steps and each series' latest value.
  function describe(data, x0, x1) {
    const latest = Object.entries(data).filter(([, pts]) => pts.length)
      .map(([name, pts]) => name + " " + short(pts[pts.length - 1][1]));
    if (!latest.length) return "Loss and reward per step: no step reported yet";
    return "Loss and reward per step, steps " + short(x0) + " to " + short(x1) +
      "; at the last step: " + latest.join(", ");
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href; a.textContent = text;
    return a;
  }

  // What the finished job made, with its links (the page renders the same for a job that had
  // finished before it was opened).
  function showResult(result, r) {
    if (!r || result.dataset.shown) return;
    const parts = [];
    if (r.version_id) {
      parts.push("Candidate version ", link("/admin#version-" + r.version_id,
                 r.version_name || String(r.version_id)), " registered.");
    }
    if (r.evaluation_id) {
      parts.push(" ", link("/admin/evaluations/" + r.evaluation_id, "Evaluation " + r.evaluation_id),
                 r.f1 === null || r.f1 === undefined ? "." : ": F1 " + r.f1 + ".");
    }
    if (!parts.length) return;
    result.replaceChildren(...parts);
    result.dataset.shown = "1";
  }

  function render(box, job) {
    box.dataset.state = job.state;
    box.querySelector(".job-state").textContent = job.state;
    const stale = box.querySelector(".job-stale");
    if (stale) {
      stale.hidden = !job.stale;
      if (job.stale) {
        stale.textContent = "stale: no heartbeat for " + Math.round(job.heartbeat_age_s) + " s";
      }
    }
    box.querySelector(".job-step").textContent = job.step;
    box.querySelector(".job-total").textContent = job.total_steps;
    box.querySelector(".job-eta").textContent =
      job.eta_s === null || job.eta_s === undefined ? "–" : Math.round(job.eta_s) + " s";
    box.querySelector(".job-progress").value = job.progress;
    const err = box.querySelector(".job-error");
    if (job.error) { err.textContent = job.error; err.hidden = false; }
    const canvas = box.querySelector(".job-plot");
    if (canvas) draw(canvas, job);
    const log = document.querySelector(".job-log");
    if (log && job.log_tail) log.textContent = job.log_tail;
    if (FINAL.includes(job.state)) {
      // A finished job cannot be cancelled: its button goes, its results' links come.
      document.querySelectorAll('[data-job-cancel="' + job.id + '"]').forEach((f) => f.remove());
      const result = document.querySelector(".job-result");
      if (result && !result.textContent.trim()) showResult(result, job.result);
    }
    // Pages that show more of a job (the library's counts and reports) listen for this.
    box.dispatchEvent(new CustomEvent("repic:job", { detail: job }));
  }

  async function poll(box) {
    const id = box.dataset.jobId;
    try {
      const r = await fetch("/api/jobs/" + id, { credentials: "same-origin" });
      if (r.ok) {
        const job = await r.json();
        render(box, job);
        if (FINAL.includes(job.state)) return;
      }
    } catch (e) { /* network blip: try again */ }
    setTimeout(() => poll(box), 1500);
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll(".job-live[data-job-id]").forEach((box) => {
      if (box.dataset.jobId) poll(box);
    });
  });
  // A job box a page adds later (a job it just started) is followed the same way.
  window.repicWatchJob = (box) => poll(box);
})();
