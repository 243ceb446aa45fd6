// Live job progress without reloading: polls /api/jobs/{id} every 1.5 s while a job is queued
// or running, updates state/step/ETA/progress and draws loss and per-task rewards per step.
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

  function draw(canvas, job) {
    const ctx = canvas.getContext("2d");
    const w = canvas.width, h = canvas.height, pad = 24;
    ctx.clearRect(0, 0, w, h);
    const data = series(job.history);
    const points = Object.values(data).flat();
    const maxStep = Math.max(job.total_steps || 1, ...points.map((p) => p[0]), 1);
    let lo = Math.min(0, ...points.map((p) => p[1])), hi = Math.max(1, ...points.map((p) => p[1]));
    if (hi === lo) hi = lo + 1;
    const x = (s) => pad + (w - 2 * pad) * (s / maxStep);
    const y = (v) => h - pad - (h - 2 * pad) * ((v - lo) / (hi - lo));
    ctx.strokeStyle = "#bbb"; ctx.strokeRect(pad, pad, w - 2 * pad, h - 2 * pad);
    ctx.font = "10px sans-serif"; ctx.fillStyle = "#555";
    ctx.fillText(hi.toFixed(2), 2, pad + 4); ctx.fillText(lo.toFixed(2), 2, h - pad);
    ctx.fillText("step " + maxStep, w - pad - 40, h - 6);
    let legend = pad;
    for (const [name, pts] of Object.entries(data)) {
      if (!pts.length) continue;
      ctx.strokeStyle = ctx.fillStyle = COLORS[name] || "#7f8c8d";
      ctx.beginPath();
      pts.forEach((p, i) => (i ? ctx.lineTo(x(p[0]), y(p[1])) : ctx.moveTo(x(p[0]), y(p[1]))));
      ctx.stroke();
      ctx.fillText(name, legend, 12); legend += ctx.measureText(name).width + 12;
    }
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
    const result = document.querySelector(".job-result");
    if (result && job.result && job.result.version_id && !result.textContent.trim()) {
      result.textContent = "Candidate version " + job.result.version_id + " registered.";
    }
    const log = document.querySelector(".job-log");
    if (log && job.log_tail) log.textContent = job.log_tail;
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
    document.querySelectorAll(".job-live[data-job-id]").forEach((box) => poll(box));
  });
})();
