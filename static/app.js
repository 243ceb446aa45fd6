// Small progressive enhancements: confirmations, drag-and-drop multi-photo upload, and a tab
// stop on boxes that scroll sideways.
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute && ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  });

  function setupDropzone(zone) {
    var input = zone.querySelector("input[type=file]");
    var previews = zone.querySelector(".previews");
    if (!input) { return; }
    function render() {
      if (!previews) { return; }
      previews.innerHTML = "";
      Array.prototype.forEach.call(input.files, function (file) {
        var fig = document.createElement("figure");
        var img = document.createElement("img");
        img.src = URL.createObjectURL(file);
        img.alt = file.name;
        var cap = document.createElement("figcaption");
        cap.textContent = file.name;
        fig.appendChild(img); fig.appendChild(cap); previews.appendChild(fig);
      });
    }
    function addFiles(files) {
      var dt = new DataTransfer();
      Array.prototype.forEach.call(input.files, function (f) { dt.items.add(f); });
      Array.prototype.forEach.call(files, function (f) {
        // Browsers that cannot show HEIC/AVIF give such files no type: go by the name then.
        if (/^image\//.test(f.type) || /\.(heic|heif|avif)$/i.test(f.name)) { dt.items.add(f); }
      });
      input.files = dt.files;
      render();
      input.dispatchEvent(new Event("change-rendered"));
    }
    input.addEventListener("change", render);
    ["dragenter", "dragover"].forEach(function (t) {
      zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.add("over"); });
    });
    ["dragleave", "drop"].forEach(function (t) {
      zone.addEventListener(t, function (e) { e.preventDefault(); zone.classList.remove("over"); });
    });
    zone.addEventListener("drop", function (e) { addFiles(e.dataTransfer.files); });
    zone.repicAddFiles = addFiles;
  }
  // A box that scrolls sideways (a wide table on a phone) must be scrollable without a
  // pointer: it gets a tab stop while it overflows, and loses it when it fits again.
  function keyboardScrollable() {
    document.querySelectorAll("table, .table-scroll, pre").forEach(function (box) {
      var scrolls = box.scrollWidth > box.clientWidth + 1;
      if (scrolls && !box.hasAttribute("tabindex")) {
        box.setAttribute("tabindex", "0");
        box.dataset.scrollStop = "1";
      } else if (!scrolls && box.dataset.scrollStop) {
        box.removeAttribute("tabindex");
        delete box.dataset.scrollStop;
      }
    });
  }
  window.repicKeyboardScrollable = keyboardScrollable;
  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll(".dropzone").forEach(setupDropzone);
    keyboardScrollable();
  });
  window.addEventListener("resize", keyboardScrollable);
  window.repicCsrf = function () {
    var m = document.querySelector("meta[name=csrf-token]");
    return m ? m.content : "";
  };
})();
