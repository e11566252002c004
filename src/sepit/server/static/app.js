// The sepit web page: pick a protein (sequence or structure file), see it in 3D, chat about it, annotate it.
// Talks only to this server's /v1 API (see /docs). No build step, no framework; 3Dmol.js draws the structure.
// Text from the server or a file is only ever set as textContent / attributes, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { protein: null, fileText: null, fileFormat: null, history: [], viewer: null, busy: false,
                drawnText: null, defaultChain: null, view: null };
window.sepit = state; // for debugging and the end-to-end test
// What the 3D view shows (read-only, for the end-to-end test): {chain, center: [x, y, z] Å}, null before a structure.
Object.defineProperty(window, "sepitView", { get: () => state.view });

async function api(path, body) {
  const r = await fetch(path, body === undefined ? {} : {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(errorText(r.status, data));
  return data;
}

function errorText(status, data) {
  let d = data && data.detail;
  if (Array.isArray(d)) d = d.map((e) => `${(e.loc || []).slice(1).join(".")}: ${e.msg}`).join("; ");
  return `${status === 429 ? "server busy" : "error " + status}: ${d || "request failed"}`;
}

function info(text, isError) {
  $("protein-info").textContent = text;
  $("protein-info").className = "info" + (isError ? " error" : "");
}

// ---- reading the protein -----------------------------------------------------------------------------------
function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

async function gunzipIfNeeded(bytes) {
  if (bytes[0] !== 0x1f || bytes[1] !== 0x8b) return bytes;
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

async function readFile(file) {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const text = new TextDecoder().decode(await gunzipIfNeeded(bytes));
  const name = file.name.toLowerCase().replace(/\.gz$/, "");
  state.fileText = text;
  state.fileFormat = name.endsWith(".cif") || name.endsWith(".mmcif") || /^\s*data_/.test(text) ? "cif" : "pdb";
  if (text.trimStart().startsWith(">")) state.fileText = null; // a FASTA file: nothing to draw
  state.upload = { filename: file.name, content_base64: toBase64(bytes) };
  $("sequence").value = "";
  $("drop").querySelector("strong").textContent = file.name;
  await loadProtein();
}

function currentInput() {
  const seq = $("sequence").value.trim();
  if (seq) {
    state.upload = null;
    state.fileText = null;
    $("drop").querySelector("strong").textContent = "or drop a structure file here";
    const fasta = seq.startsWith(">");
    return { sequence: fasta ? seq.split("\n").filter((l) => !l.startsWith(">")).join("") : seq };
  }
  if (state.upload) {
    const chain = $("chain").value || null;
    return { structure: state.upload, chain };
  }
  return null;
}

const chainOf = (p) => (p.id.includes(":") ? p.id.split(":").pop() : "");

async function loadProtein(keepChain) {
  const input = currentInput();
  if (!input) { info("Paste a sequence or drop a structure file first.", true); return; }
  if (!keepChain) input.chain = null;
  info("Reading…");
  try {
    const res = await api("/v1/parse", input);
    const prots = res.proteins;
    // Without a named chain the server uses the longest one (res.default); the selector starts on the same chain.
    const p = prots[res.default || 0];
    const sel = $("chain");
    if (!keepChain) {
      sel.replaceChildren();
      for (const q of prots) if (chainOf(q)) sel.add(new Option(`${chainOf(q)} (${q.length} aa)`, chainOf(q)));
      sel.value = chainOf(p);
      state.defaultChain = chainOf(p) || null;
    }
    sel.disabled = sel.options.length < 2;
    state.protein = input.structure ? { structure: input.structure, chain: keepChain ? input.chain : (sel.value || null) }
                                    : { sequence: input.sequence };
    let text = `${p.id} · ${p.length} residues · ${p.has_structure ? p.residues_with_coords + " with Cα coordinates"
                                                                  : "no structure (sequence only)"}`;
    if (sel.options.length > 1 && state.protein.chain === state.defaultChain) {
      text += ` · the longest of ${sel.options.length} chains (pick another above)`;
    }
    info(text);
    draw(state.protein.chain);
    resetChat();
    $("ask").disabled = false;
    $("annotate").disabled = false;
  } catch (e) {
    state.protein = null;
    info(e.message, true);
    $("ask").disabled = true;
    $("annotate").disabled = true;
  }
}

// ---- 3D view -----------------------------------------------------------------------------------------------
function draw(chain) {
  const el = $("viewer");
  el.dataset.rendered = "0";
  state.view = null;
  if (!state.fileText) {
    if (state.viewer) { state.viewer.clear(); state.viewer.render(); }
    state.drawnText = null;
    el.querySelector(".placeholder")?.remove();
    el.insertAdjacentHTML("beforeend", '<div class="placeholder">No structure: sequence only.</div>');
    return;
  }
  el.querySelector(".placeholder")?.remove();
  if (typeof $3Dmol === "undefined") { info("3D viewer failed to load", true); return; }
  if (!state.viewer) state.viewer = $3Dmol.createViewer(el, { backgroundColor: "white", antialias: true });
  const v = state.viewer;
  if (state.drawnText !== state.fileText) { // a new file; a new chain of the same file only refocuses
    v.clear();
    v.addModel(state.fileText, state.fileFormat);
    state.drawnText = state.fileText;
  }
  focusChain(v, chain);
  v.render(() => { el.dataset.rendered = "1"; });
  el.dataset.rendered = "1";
}

// The chosen chain in colour, centred and filling the frame; the other chains stay as dim grey context.
function focusChain(v, chain) {
  let sel = chain ? { chain } : {};
  if (chain && v.selectedAtoms(sel).length === 0) sel = {}; // a chain the viewer cannot find: frame the whole file
  v.setStyle({}, { cartoon: { color: "lightgrey", opacity: 0.45 } });
  v.setStyle(sel, { cartoon: { color: "spectrum" } });
  v.addStyle({ ...sel, hetflag: true }, { stick: { radius: 0.2 } });
  v.resize(); // the frame may have changed size since the viewer was made
  v.zoomTo(sel); // centre on the chain's atoms and zoom to its extent
  const at = v.getView(); // the model is shifted by minus the centre
  state.view = Object.freeze({ chain: sel.chain || null, center: Object.freeze([-at[0], -at[1], -at[2]]) });
}

// ---- chat --------------------------------------------------------------------------------------------------
function resetChat() {
  state.history = [];
  $("messages").innerHTML = "";
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("messages").appendChild(div);
  $("messages").scrollTop = $("messages").scrollHeight;
  return div;
}

async function ask(question) {
  if (!state.protein || state.busy) return;
  state.busy = true;
  $("ask").disabled = true;
  bubble("user", question);
  const out = bubble("assistant pending", "");
  const body = { ...state.protein, question, history: state.history, stream: true,
                 max_new_tokens: Number($("max-tokens").value) || null,
                 temperature: Number($("temperature").value) || 0 };
  let answer = "";
  try {
    const r = await fetch("/v1/ask", { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify(body) });
    if (!r.ok) throw new Error(errorText(r.status, await r.json().catch(() => ({}))));
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const ev = parseEvent(buf.slice(0, cut));
        buf = buf.slice(cut + 2);
        if (ev.event === "homologs") out.after(homologTable(ev.data.homologs || []));
        else if (ev.event === "token") { answer += ev.data.text; out.textContent = answer; }
        else if (ev.event === "done") { answer = ev.data.answer; out.textContent = answer || "(empty answer)"; }
        else if (ev.event === "error") throw new Error(ev.data.detail);
      }
    }
    state.history.push({ role: "user", content: question }, { role: "assistant", content: answer });
    out.className = "msg assistant done";
  } catch (e) {
    out.className = "msg assistant error";
    out.textContent = e.message;
  } finally {
    state.busy = false;
    $("ask").disabled = false;
  }
}

// ---- provenance: the retrieved homologs whose annotations went into the model's prompt ------------------------
const UNIPROT_AC = /^(?:[OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9](?:[A-Z][A-Z0-9]{2}[0-9]){1,2})(?:-[0-9]+)?$/;
const NOTE_CHARS = 80;

function percent(x) { return Number.isFinite(x) ? `${(100 * x).toFixed(0)}%` : "–"; }

function evalueText(e) {
  if (e === null || e === undefined || !Number.isFinite(e)) return "–";
  return e === 0 ? "0" : e < 0.01 ? e.toExponential(1) : e.toPrecision(2);
}

function homologTable(rows) {
  const box = document.createElement("div");
  box.className = "homologs";
  const title = document.createElement("div");
  title.className = "homologs-title";
  title.textContent = "Homologs in the model's prompt";
  box.appendChild(title);
  if (!rows.length) {
    const none = document.createElement("div");
    none.className = "homologs-none";
    none.textContent = "no homologs found";
    box.appendChild(none);
    return box;
  }
  const table = document.createElement("table");
  const head = table.createTHead().insertRow();
  for (const h of ["accession", "identity", "coverage", "e-value", "annotation"]) {
    const th = document.createElement("th");
    th.textContent = h;
    head.appendChild(th);
  }
  const body = table.createTBody();
  for (const h of rows) {
    const tr = body.insertRow();
    const id = String(h.id ?? "");
    const idCell = tr.insertCell();
    if (UNIPROT_AC.test(id)) {
      const a = document.createElement("a");
      a.href = `https://www.uniprot.org/uniprotkb/${encodeURIComponent(id)}`;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = id;
      idCell.appendChild(a);
    } else {
      idCell.textContent = id;
    }
    tr.insertCell().textContent = percent(h.identity);
    tr.insertCell().textContent = percent(h.coverage);
    tr.insertCell().textContent = evalueText(h.evalue);
    const note = String(h.annotation ?? "");
    const cell = tr.insertCell();
    // a yes/no question: does this hit's annotation name the value asked about (what the model was shown)
    const claim = typeof h.answers_yes === "boolean" ? (h.answers_yes ? " → yes" : " → no") : "";
    cell.textContent = (note.length > NOTE_CHARS ? `${note.slice(0, NOTE_CHARS - 1)}…` : note) + claim;
    if (note) cell.title = note; // the full text on hover
  }
  box.appendChild(table);
  return box;
}

function parseEvent(block) {
  const ev = { event: "message", data: {} };
  for (const line of block.split("\n")) {
    if (line.startsWith("event: ")) ev.event = line.slice(7);
    else if (line.startsWith("data: ")) ev.data = JSON.parse(line.slice(6));
  }
  return ev;
}

// ---- annotation --------------------------------------------------------------------------------------------
async function annotate() {
  if (!state.protein) return;
  const tbody = $("annotations").querySelector("tbody");
  tbody.innerHTML = "<tr><td>annotating…</td><td></td></tr>";
  $("annotate").disabled = true;
  try {
    const res = await api("/v1/annotate", { proteins: [state.protein] });
    const row = res.results[0];
    tbody.innerHTML = "";
    for (const q of state.questions || []) {
      const tr = tbody.insertRow();
      tr.insertCell().textContent = q.question;
      const val = q.kind === "yesno" ? `P(yes) = ${row.yes_no[q.key].toFixed(2)}` : row.answers[q.key];
      tr.insertCell().textContent = val;
    }
  } catch (e) {
    tbody.innerHTML = "";
    tbody.insertRow().insertCell().textContent = e.message;
  } finally {
    $("annotate").disabled = false;
  }
}

// ---- wiring ------------------------------------------------------------------------------------------------
function init() {
  const drop = $("drop");
  drop.addEventListener("click", () => $("file").click());
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter") $("file").click(); });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) readFile(e.target.files[0]); });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]);
  });
  $("load").addEventListener("click", () => loadProtein());
  $("chain").addEventListener("change", () => loadProtein(true));
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("question").value.trim();
    if (q) { $("question").value = ""; ask(q); }
  });
  $("clear").addEventListener("click", resetChat);
  $("annotate").addEventListener("click", annotate);
  api("/health").then((h) => {
    $("model-name").textContent = h.model ? `model: ${h.model}` : "";
    const L = h.limits;
    $("max-tokens").max = L.max_new_tokens;
    $("max-tokens").value = L.default_max_new_tokens;
    $("temperature").max = L.max_temperature;
    if (L.max_temperature === 0) {
      $("temperature").disabled = true;
      $("temperature").title = "this model decodes greedily only";
    }
    $("limits").textContent = `limits: ≤ ${L.max_sequence_length} residues, ≤ ${L.max_new_tokens} new tokens, ` +
      `uploads ≤ ${(L.max_upload_bytes / 1048576).toFixed(0)} MiB`;
  }).catch(() => {});
  api("/v1/questions").then((r) => { state.questions = r.questions; }).catch(() => {});
}

init();
