// View state in the URL's fragment, #/page?name=value&…: a link reproduces what it shows,
// and the fragment never reaches the server's logs.

export function currentView() {
  const [page, search = ""] = location.hash.replace(/^#\/?/, "").split("?");
  return { page: page || "runs", params: new URLSearchParams(search) };
}

export function link(page, parameters = {}) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    if (value !== undefined && value !== null && value !== "") search.set(name, value);
  }
  const text = search.toString();
  return `#/${page}${text ? `?${text}` : ""}`;
}

// The page's own state changed (a filter, a zoom): the URL follows without a new render.
export function updateParams(changes) {
  const { page, params } = currentView();
  for (const [name, value] of Object.entries(changes)) {
    if (value === undefined || value === null || value === "" || value === false) params.delete(name);
    else params.set(name, value);
  }
  const text = params.toString();
  history.replaceState(null, "", `#/${page}${text ? `?${text}` : ""}`);
}
