// Apollo Client 4's persisted-queries link against a Portraits server: node apq.mjs <graphql URL> <get|post> <marker>
// Prints one JSON object: every HTTP exchange the link made (method, query string, body, status) and each result.
import { createHash } from "node:crypto";
import { ApolloClient, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";

const [url, method, marker] = process.argv.slice(2);
const exchanges = [];

async function recordingFetch(input, init) {
  const response = await fetch(input, init);
  const target = new URL(typeof input === "string" ? input : input.url);
  exchanges.push({
    method: init?.method ?? "GET",
    params: Object.fromEntries(target.searchParams),
    body: init?.body ? JSON.parse(init.body) : null,
    status: response.status,
    cacheControl: response.headers.get("cache-control"),
    response: await response.clone().json(),
  });
  return response;
}

const link = new PersistedQueryLink({
  sha256: (text) => createHash("sha256").update(text).digest("hex"),
  useGETForHashedQueries: method === "get",
}).concat(new HttpLink({ uri: url, fetch: recordingFetch }));

// The marker (an alias) makes the document, and so its hash, one this server has not seen.
const query = gql(`query Models { ${marker}: imageModels { modelKey } }`);
const results = [];
for (const attempt of [1, 2]) {
  // A new cache each time: the second query reaches the server too.
  const client = new ApolloClient({ link, cache: new InMemoryCache() });
  const result = await client.query({ query, fetchPolicy: "network-only" });
  results.push({ attempt, data: result.data ?? null, error: result.error ? String(result.error) : null });
}
console.log(JSON.stringify({ exchanges, results }));
