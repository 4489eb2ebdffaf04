// The shell: sign-in, the navigation, and the page the URL names. Each page module
// exports render(root, params, signal); `signal` aborts when another page replaces it,
// stopping its polls and streams.
import { api, ApiError, session } from "./api.js";
import { h, problem } from "./dom.js";
import { currentView } from "./view.js";

const PAGES = {
  runs: () => import("./runs.js"),
  run: () => import("./run.js"),
  compare: () => import("./compare.js"),
  sweeps: () => import("./sweeps.js"),
  models: () => import("./models.js"),
  try: () => import("./tryit.js"),
  datasets: () => import("./datasets.js"),
  keys: () => import("./keys.js"),
};
const view = document.getElementById("view");
const nav = document.getElementById("nav");
const signOutButton = document.getElementById("sign-out");
let running = null; // the page's AbortController

function showSignIn(message) {
  running?.abort();
  nav.hidden = signOutButton.hidden = true;
  // No name: were the form ever submitted by the browser itself, the key would not go
  // into the URL (the CSP's form-action 'none' refuses such a submission as well).
  const input = h("input", {
    type: "password", id: "key", required: true, autocomplete: "off",
    placeholder: "ts_…", "aria-label": "API key",
  });
  const form = h(
    "form", { class: "sign-in card", onsubmit: (event) => signIn(event, input) },
    h("h1", {}, "Sign in"),
    h("p", {}, "Paste an API key. It stays in this tab and is sent only as a header."),
    input,
    h("button", { type: "submit" }, "Sign in"),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
  );
  view.replaceChildren(form);
  document.body.dataset.page = "sign-in";
  input.focus();
}

async function signIn(event, input) {
  event.preventDefault();
  session.signIn(input.value.trim());
  try {
    await api("/jobs?limit=1");
  } catch (error) {
    // 401 signed the key out already (and showed the sign-in page again); a predict key
    // (403) may still use Try it.
    if (!(error instanceof ApiError) || error.status !== 403) {
      if (session.key) session.signOut(error.message);
      return;
    }
  }
  route();
}

async function route() {
  if (!session.key) return showSignIn();
  const { page, params } = currentView();
  const load = PAGES[page];
  if (!load) return view.replaceChildren(problem(new Error(`no page ${page}`)));
  running?.abort();
  running = new AbortController();
  nav.hidden = signOutButton.hidden = false;
  for (const a of nav.querySelectorAll("a")) a.classList.toggle("here", a.dataset.page === page);
  document.body.dataset.page = page;
  const root = h("section", { class: `page page-${page}` });
  view.replaceChildren(root);
  const signal = running.signal;
  try {
    await (await load()).render(root, params, signal);
  } catch (error) {
    if (!signal.aborted && session.key) root.append(problem(error));
  }
}

// A page's requests still under way when another page replaces it end as AbortErrors:
// expected, not faults. Any other unhandled rejection still reaches the console.
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason?.name === "AbortError") event.preventDefault();
});
window.addEventListener("signed-out", (event) => showSignIn(event.detail));
window.addEventListener("hashchange", route);
signOutButton.addEventListener("click", () => session.signOut());
route();
