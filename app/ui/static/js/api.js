// The public API, called with the signed-in key as `Authorization: Bearer`. The key lives
// in sessionStorage: it goes with the tab, never into a URL or a cookie (see app/ui).

const KEY = "trainserve.key";

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  signIn(key) {
    sessionStorage.setItem(KEY, key);
  },
  signOut(reason) {
    sessionStorage.removeItem(KEY);
    window.dispatchEvent(new CustomEvent("signed-out", { detail: reason }));
  },
};

export class ApiError extends Error {
  constructor(status, detail) {
    super(typeof detail === "string" ? detail : JSON.stringify(detail));
    this.status = status;
  }
}

function headers(extra = {}) {
  return { Authorization: `Bearer ${session.key}`, ...extra };
}

async function refusal(response) {
  let detail = `${response.status} ${response.statusText}`;
  try {
    detail = (await response.json()).detail ?? detail;
  } catch {
    // not JSON: keep the status line
  }
  if (response.status === 401) session.signOut(detail);
  return new ApiError(response.status, detail);
}

// JSON in (`json`) or any body, JSON out; an ApiError with the server's detail otherwise.
export async function api(path, { method = "GET", json, body, signal, raw = false } = {}) {
  const extra = json === undefined ? {} : { "Content-Type": "application/json" };
  const response = await fetch(path, {
    method,
    headers: headers(extra),
    body: json === undefined ? body : JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw await refusal(response);
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

export function query(parameters) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(parameters)) {
    for (const one of [value].flat()) {
      if (one !== undefined && one !== null && one !== "") search.append(name, one);
    }
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// An upload through XMLHttpRequest, the one browser API that reports the bytes sent.
export function upload(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", path);
    request.setRequestHeader("Authorization", `Bearer ${session.key}`);
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total);
    request.onerror = () => reject(new ApiError(0, "the upload failed: the connection was lost"));
    request.onload = () => {
      let answer = null;
      try {
        answer = JSON.parse(request.responseText);
      } catch {
        answer = { detail: request.responseText };
      }
      if (request.status >= 200 && request.status < 300) resolve(answer);
      else {
        if (request.status === 401) session.signOut(answer.detail);
        reject(new ApiError(request.status, answer.detail ?? request.statusText));
      }
    };
    request.send(form);
  });
}

// A file from a route behind the key: fetched, then saved through an object URL (a plain
// link could not send the key).
export async function download(path, filename) {
  const blob = await (await api(path, { raw: true })).blob();
  const link = Object.assign(document.createElement("a"), {
    href: URL.createObjectURL(blob),
    download: filename,
  });
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
}

const RECONNECT_MS = 1000;

// A job's Server-Sent Events, read with fetch so that the key goes in a header
// (EventSource cannot send one). After a dropped connection it reconnects with
// Last-Event-ID, so no event is missed or seen twice; it returns when the stream ends
// (the job has ended) or `signal` aborts.
export async function followEvents(jobId, lastEventId, onEvent, signal) {
  let seen = lastEventId;
  while (!signal.aborted) {
    try {
      const response = await fetch(`/jobs/${jobId}/events`, {
        headers: headers({ Accept: "text/event-stream", "Last-Event-ID": String(seen) }),
        signal,
      });
      if (response.status === 204) return; // the job has ended and nothing follows `seen`
      if (!response.ok) throw await refusal(response);
      for await (const event of serverSentEvents(response.body)) {
        seen = event.id;
        onEvent(event);
      }
      return;
    } catch (error) {
      if (signal.aborted || error instanceof ApiError) return;
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_MS));
    }
  }
}

async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replaceAll("\r\n", "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event) yield event;
    }
  }
}

function parseEvent(block) {
  const fields = { data: [] };
  for (const line of block.split("\n")) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue; // a comment (keep-alive) or a blank
    const name = line.slice(0, colon);
    const value = line.slice(colon + 1).replace(/^ /, "");
    if (name === "data") fields.data.push(value);
    else fields[name] = value;
  }
  if (fields.id === undefined) return null;
  return { id: Number(fields.id), kind: fields.event, data: JSON.parse(fields.data.join("\n")) };
}
