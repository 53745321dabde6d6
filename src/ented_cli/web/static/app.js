// The ented page: choose photos and references, send them, follow the progress, show each
// result with before/after sliders and its faces, offer the downloads. Plain JavaScript, no
// build step, nothing loaded from elsewhere. Text from files (names) is only ever set as text.
"use strict";

const state = { info: null, photos: [], refs: [], job: null, busy: false };
const POLL_MS = 400;

const $ = (selector, root = document) => root.querySelector(selector);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function megabytes(bytes) {
  return `${(bytes / 2 ** 20).toFixed(bytes < 2 ** 20 ? 2 : 0)} MB`;
}

// -- messages ------------------------------------------------------------------------------
function showErrors(messages) {
  const box = $("#errors");
  box.replaceChildren();
  if (!messages.length) return;
  box.append(el("ul", {}, ...messages.map((m) => el("li", { text: m }))));
}

function setStatus(text, progress) {
  $("#status-text").textContent = text;
  const bar = $("#progress");
  bar.hidden = progress === null;
  if (progress !== null) bar.value = progress;
}

// -- choosing files ------------------------------------------------------------------------
function addFiles(kind, files) {
  const problems = [];
  const limit = state.info ? state.info.max_upload_bytes : Infinity;
  const most = state.info ? state.info[kind === "photos" ? "max_photos" : "max_refs"] : Infinity;
  for (const file of files) {
    if (file.type && !file.type.startsWith("image/")) {
      problems.push(`${file.name}: not a photo; choose a JPEG, PNG, WebP, TIFF or BMP image`);
    } else if (file.size > limit) {
      problems.push(`${file.name}: ${megabytes(file.size)} is more than the limit of ` +
        `${megabytes(limit)}; use a smaller copy`);
    } else if (state[kind].length >= most) {
      problems.push(`${file.name}: at most ${most} at a time`);
    } else {
      state[kind].push({ file, url: URL.createObjectURL(file) });
    }
  }
  showErrors(problems);
  renderChosen(kind);
}

function renderChosen(kind) {
  const list = $(`#${kind}-list`);
  list.replaceChildren(...state[kind].map((item, i) => el("li", {},
    el("img", { src: item.url, alt: "" }),
    el("span", { class: "name", text: item.file.name }),
    el("button", {
      type: "button", class: "remove", text: "Remove",
      "aria-label": `Remove ${item.file.name}`,
      onclick: () => {
        URL.revokeObjectURL(item.url);
        state[kind].splice(i, 1);
        renderChosen(kind);
        $(`#${kind}-input`).focus();
      },
    }),
  )));
}

function setUpDrop(zone) {
  const kind = zone.dataset.kind;
  const input = $("input[type=file]", zone);
  input.addEventListener("change", () => { addFiles(kind, input.files); input.value = ""; });
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (e) => { e.preventDefault(); zone.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    zone.addEventListener(name, () => zone.classList.remove("over"));
  }
  zone.addEventListener("drop", (e) => { e.preventDefault(); addFiles(kind, e.dataTransfer.files); });
}

// -- sending and waiting -------------------------------------------------------------------
async function restore(event) {
  event.preventDefault();
  if (state.busy) return;
  if (!state.photos.length) {
    showErrors(["Choose at least one old photo to restore (step 1)."]);
    $("#photos-input").focus();
    return;
  }
  const total = [...state.photos, ...state.refs].reduce((sum, item) => sum + item.file.size, 0);
  if (state.info && total > state.info.max_upload_bytes) {
    showErrors([`These photos add up to ${megabytes(total)}, more than the limit of ` +
      `${megabytes(state.info.max_upload_bytes)}; restore fewer at a time.`]);
    return;
  }
  showErrors([]);
  forgetJob();
  const form = new FormData();
  for (const item of state.photos) form.append("photos", item.file, item.file.name);
  for (const item of state.refs) form.append("refs", item.file, item.file.name);
  form.append("fidelity", $("#fidelity").value);
  setBusy(true);
  setStatus("Sending the photos ...", 0);
  try {
    const answer = await fetch("api/jobs", { method: "POST", body: form });
    const body = await answer.json();
    if (!answer.ok) throw new Error((body.errors || [body.error]).join("\n"));
    state.job = body.id;
    const job = await follow(body.id);
    if (job.state === "failed") throw new Error(job.error);
    showResults(job);
    setStatus("Done.", null);
  } catch (error) {
    showErrors(String(error.message || error).split("\n"));
    setStatus("", null);
  } finally {
    setBusy(false);
  }
}

async function follow(id) {
  for (;;) {
    const answer = await fetch(`api/jobs/${id}`);
    const job = await answer.json();
    if (!answer.ok) throw new Error(job.error);
    if (job.state === "done" || job.state === "failed") return job;
    if (job.state === "queued") {
      const ahead = job.position;
      setStatus(ahead ? `Waiting: ${ahead} earlier request(s) first ...` : "Starting ...", 0);
    } else {
      setStatus(`Working on ${job.stage} ...`, job.progress);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function setBusy(busy) {
  state.busy = busy;
  const go = $("#go");
  go.disabled = busy;
  go.textContent = busy ? "Restoring ..." : "Restore";
}

function forgetJob() {
  if (state.job) fetch(`api/jobs/${state.job}`, { method: "DELETE", keepalive: true });
  state.job = null;
}

// -- results -------------------------------------------------------------------------------
function compare(before, after, width, height, label) {
  const box = el("div", { class: "compare" });
  box.style.aspectRatio = `${width} / ${height}`;
  const shown = el("div", { class: "before" }, el("img", { src: before, alt: `${label}, before` }));
  const slider = el("input", {
    type: "range", min: "0", max: "100", step: "1", value: "50", class: "divider",
    "aria-label": `Before and after: ${label}. Left of the line is before.`,
  });
  const move = () => {
    box.style.setProperty("--pos", `${slider.value}%`);
    slider.setAttribute("aria-valuetext", `${slider.value}% before`);
  };
  slider.addEventListener("input", move);
  move();
  box.append(
    el("img", { src: after, alt: `${label}, after`, class: "after" }),
    shown,
    el("div", { class: "line", "aria-hidden": "true" }),
    el("span", { class: "tag left", text: "before", "aria-hidden": "true" }),
    el("span", { class: "tag right", text: "after", "aria-hidden": "true" }),
    slider,
  );
  return box;
}

function faceKind(face) {
  if (face.mode === "reference") return "matched";
  return face.mode === "blind" ? "unmatched" : "skipped";
}

function faceLabel(face) {
  if (face.mode === "reference") return `${face.person} ${face.match_similarity.toFixed(2)}`;
  return face.mode === "blind" ? "no match" : "left as it was";
}

function describeFace(face) {
  const sim = face.match_similarity === null ? null : face.match_similarity.toFixed(2);
  const needed = state.info ? state.info.match_threshold.toFixed(2) : "";
  let text;
  if (face.mode === "reference") {
    text = `Paired with ${face.references.join(", ")} (similarity ${sim}).`;
  } else if (face.reason === "no_references") {
    text = "No reference photo was given, so it was restored without one.";
  } else if (face.reason === "below_threshold") {
    text = `No reference photo matched this face (closest similarity ${sim}, ${needed} ` +
      "needed), so it was restored without one.";
  } else if (face.reason === "person_taken") {
    text = `It resembles a reference person (similarity ${sim}), but that person was paired ` +
      "with a closer face; restored without a reference.";
  } else {
    text = "Left as it was.";
  }
  if (face.guard === "kept_input" && face.guard_reason === "already_sharp") {
    text += " It was kept as it was: restoring would not make it clearly sharper.";
  } else if (face.guard === "kept_input") {
    text += " It was kept as it was: restoring it made it look less like that person.";
  }
  return text;
}

function boxes(photo) {
  const layer = el("div", { class: "boxes", "aria-hidden": "true" });
  photo.faces.forEach((face, k) => {
    const [x0, y0, x1, y1] = face.box;
    const box = el("div", { class: `box ${faceKind(face)}` },
      el("span", { text: `${k + 1} · ${faceLabel(face)}` }));
    box.style.left = `${(100 * x0) / photo.width}%`;
    box.style.top = `${(100 * y0) / photo.height}%`;
    box.style.width = `${(100 * (x1 - x0)) / photo.width}%`;
    box.style.height = `${(100 * (y1 - y0)) / photo.height}%`;
    layer.append(box);
  });
  return layer;
}

function faceItem(face, k, photo) {
  const [x0, y0, x1, y1] = face.window;
  const item = el("li", { class: `face ${faceKind(face)}` },
    el("h4", { text: `Face ${k + 1}: ${faceLabel(face)}` }),
    compare(face.urls.before, face.urls.after, x1 - x0, y1 - y0, `${photo.name}, face ${k + 1}`),
    el("p", { text: describeFace(face) }));
  for (const index of face.reference_indices) {
    const ref = state.refs[index];
    if (ref) {
      item.append(el("figure", { class: "ref" },
        el("img", { src: ref.url, alt: `Reference photo ${ref.file.name}` }),
        el("figcaption", { text: `Reference: ${ref.file.name}` })));
    }
  }
  return item;
}

function photoCard(photo) {
  const card = el("article", { class: `result ${photo.status}` }, el("h3", { text: photo.name }));
  card.append(el("p", { class: "message", text: photo.message }));
  for (const warning of photo.warnings) card.append(el("p", { class: "warning", text: warning }));
  if (photo.status === "error") return card;
  const picture = compare(photo.urls.before, photo.urls.after, photo.width, photo.height, photo.name);
  // A small photo is not blown up past twice its size (a phone's screen narrows it anyway).
  picture.style.maxWidth = `${Math.max(2 * photo.width, 320)}px`;
  picture.append(boxes(photo));
  const toggle = el("input", { type: "checkbox", checked: "" });
  toggle.addEventListener("change", () => picture.classList.toggle("no-boxes", !toggle.checked));
  card.append(picture);
  if (photo.faces.length) {
    card.append(el("label", { class: "toggle" }, toggle, " Show the face boxes"));
    card.append(el("ol", { class: "faces" }, ...photo.faces.map((f, k) => faceItem(f, k, photo))));
  }
  card.append(el("a", {
    class: "button", href: photo.urls.result, download: photo.download_name,
    text: `Download ${photo.download_name}`,
  }));
  return card;
}

function showResults(job) {
  const section = $("#results");
  $("#zip").href = job.zip;
  $("#zip").hidden = !job.photos.some((p) => p.status !== "error");
  $("#result-list").replaceChildren(...job.photos.map(photoCard));
  section.hidden = false;
  const title = $("#results-title");
  title.tabIndex = -1;
  title.focus();
}

function startOver() {
  forgetJob();
  for (const kind of ["photos", "refs"]) {
    for (const item of state[kind]) URL.revokeObjectURL(item.url);
    state[kind] = [];
    renderChosen(kind);
  }
  $("#result-list").replaceChildren();
  $("#results").hidden = true;
  showErrors([]);
  setStatus("", null);
  $("#photos-input").focus();
}

// -- start ---------------------------------------------------------------------------------
async function start() {
  document.querySelectorAll(".drop").forEach(setUpDrop);
  // A file dropped next to a zone must not make the browser leave the page to show it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
  const fidelity = $("#fidelity");
  fidelity.addEventListener("input", () => {
    $("#fidelity-value").textContent = Number(fidelity.value).toFixed(2);
  });
  $("#form").addEventListener("submit", restore);
  $("#again").addEventListener("click", startOver);
  window.addEventListener("pagehide", forgetJob);
  try {
    const answer = await fetch("api/info");
    state.info = await answer.json();
    fidelity.value = state.info.fidelity;
    fidelity.dispatchEvent(new Event("input"));
  } catch (error) {
    showErrors(["ented serve does not answer; is it still running?"]);
  }
}

start();
