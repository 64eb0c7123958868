// JumpScope page behaviour (no inline scripts: the CSP forbids them). Event delegation, so everything keeps
// working after htmx swaps a partial in.
(function () {
  "use strict";
  const HEAT = /\bheat-\d+\b/g;

  function setHeat(el, cls) {
    el.className = el.className.replace(HEAT, "").trim() + " " + cls;
  }

  // Inspect: click a token → show its active latents.
  function selectToken(btn) {
    const i = btn.dataset.index;
    document.querySelectorAll("#tokens .tok.selected").forEach((t) => t.classList.remove("selected"));
    btn.classList.add("selected");
    document.querySelectorAll(".token-latents").forEach((p) => { p.hidden = p.id !== "token-latents-" + i; });
    const hint = document.getElementById("token-hint");
    if (hint) hint.hidden = true;
  }

  // Inspect: colour the tokens by one latent (levels precomputed by the server), or back to the default.
  function colourBy(btn) {
    const levels = btn.dataset.levels.split(",");
    const tokens = document.querySelectorAll("#tokens .tok");
    const again = btn.classList.contains("active");
    document.querySelectorAll(".colour-by.active").forEach((b) => b.classList.remove("active"));
    tokens.forEach((t, k) => setHeat(t, again ? t.dataset.base : "heat-" + (levels[k] || 0)));
    const label = document.getElementById("colour-mode");
    if (again) {
      if (label) label.textContent = "coloured by number of active latents";
    } else {
      btn.classList.add("active");
      if (label) label.textContent = "coloured by latent #" + btn.dataset.latent;
    }
  }

  // Steer: add / remove intervention rows.
  function addRow() {
    const rows = document.getElementById("interventions");
    const first = rows && rows.querySelector(".intervention");
    if (!first) return;
    const copy = first.cloneNode(true);
    copy.querySelectorAll("input").forEach((inp) => { inp.value = ""; });
    copy.querySelectorAll(".picker-expl").forEach((s) => { s.textContent = ""; });
    copy.querySelector("select").value = "clamp";
    rows.appendChild(copy);
  }

  function removeRow(btn) {
    const rows = document.querySelectorAll("#interventions .intervention");
    const row = btn.closest(".intervention");
    if (rows.length > 1) row.remove();
    else row.querySelectorAll("input").forEach((inp) => { inp.value = ""; });
  }

  document.addEventListener("click", (ev) => {
    const t = ev.target;
    if (!(t instanceof Element)) return;
    const tok = t.closest("#tokens .tok");
    if (tok) return selectToken(tok);
    const colour = t.closest(".colour-by");
    if (colour) return colourBy(colour);
    if (t.id === "add-row") return addRow();
    const rm = t.closest(".remove-row");
    if (rm) return removeRow(rm);
  });
})();
