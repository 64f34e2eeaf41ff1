// The browser app: what a client developer writes against the API from another origin.
// 1. fetch: a query with the bearer token (a preflighted cross-origin POST), reading the exposed X-Request-ID;
// 2. graphql-ws: the same query, a character created, a portrait generated, its job followed to the end;
// 3. the portrait's signed image shown in an <img>.
// window.appResult holds what happened; #state ends as "done" or "failed: ...".
"use strict";

const params = new URLSearchParams(location.hash.slice(1));
const api = params.get("api");
const token = params.get("token");
const show = (id, text) => { document.getElementById(id).textContent = text; };

async function overHttp(query, variables) {
  const response = await fetch(api, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(`HTTP GraphQL errors: ${JSON.stringify(body.errors)}`);
  return { data: body.data, requestId: response.headers.get("X-Request-ID") };
}

function socketClient() {
  return graphqlWs.createClient({
    url: api.replace(/^http/, "ws"),
    connectionParams: { Authorization: `Bearer ${token}` },
    retryAttempts: 0,
    lazy: true,
  });
}

// One operation (query or mutation) over the socket: its single result.
function once(client, query, variables) {
  return new Promise((resolve, reject) => {
    let result;
    client.subscribe({ query, variables }, {
      next: (value) => { result = value; },
      error: (error) => reject(new Error(`socket error: ${JSON.stringify(error?.message ?? error?.reason ?? error)}`)),
      complete: () => (result?.errors ? reject(new Error(JSON.stringify(result.errors))) : resolve(result.data)),
    });
  });
}

// Every update of a job until it ends; resolves with the last one.
function followJob(client, id, onUpdate) {
  return new Promise((resolve, reject) => {
    let last;
    client.subscribe({
      query: `subscription($id: ID!) { jobChanged(id: $id) {
        id status error libraryAsset { signedUrl { url } } } }`,
      variables: { id },
    }, {
      next: (value) => {
        if (value.errors) { reject(new Error(JSON.stringify(value.errors))); return; }
        last = value.data.jobChanged;
        onUpdate(last);
      },
      error: (error) => reject(new Error(`subscription error: ${JSON.stringify(error?.message ?? error)}`)),
      complete: () => resolve(last),
    });
  });
}

function loadImage(url) {
  const img = document.getElementById("portrait");
  return new Promise((resolve, reject) => {
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`the image did not load: ${url}`));
    img.src = url;
  });
}

async function main() {
  const result = { statuses: [] };
  window.appResult = result;
  const viewerQuery = "{ viewer { id } }";

  const http = await overHttp(viewerQuery);
  result.httpViewer = http.data.viewer.id;
  result.requestId = http.requestId;
  show("viewer", result.httpViewer);
  show("request-id", String(result.requestId));

  const client = socketClient();
  try {
    result.socketViewer = (await once(client, viewerQuery)).viewer.id;
    show("socket-viewer", result.socketViewer);

    const created = await once(client,
      "mutation($input: CreateCharacterInput!) { createCharacter(input: $input) { id name } }",
      { input: { name: "Browser Bard", description: "Made by a page on another origin." } });
    result.characterId = created.createCharacter.id;
    show("character", created.createCharacter.name);

    const started = await once(client,
      "mutation($input: GenerateCharacterPortraitInput!) { generateCharacterPortrait(input: $input) { id status } }",
      { input: { characterId: result.characterId, seed: 7 } });
    result.jobId = started.generateCharacterPortrait.id;

    const done = await followJob(client, result.jobId, (job) => {
      result.statuses.push(job.status);
      show("statuses", result.statuses.join(" "));
    });
    if (done.status !== "COMPLETED") throw new Error(`job ended ${done.status}: ${done.error}`);
    result.imageUrl = done.libraryAsset.signedUrl.url;
  } finally {
    await client.dispose();
  }

  const img = await loadImage(result.imageUrl);
  result.naturalWidth = img.naturalWidth;
  result.naturalHeight = img.naturalHeight;
  show("state", "done");
}

main().catch((error) => {
  if (window.appResult) window.appResult.error = String(error);
  show("state", `failed: ${error}`);
});
