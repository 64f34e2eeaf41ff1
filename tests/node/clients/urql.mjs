// urql and Portraits: create a character, generate its portrait, follow the job over a websocket,
// list the library with signed URLs and download the image. Prints what it saw as JSON.
//   PORTRAITS_URL=http://127.0.0.1:8000/graphql PORTRAITS_TOKEN=<access token> node urql.mjs
// In a browser, leave out the "ws" import and webSocketImpl: browsers have WebSocket.
import { Client, cacheExchange, fetchExchange, gql, subscriptionExchange } from "@urql/core";
import { persistedExchange } from "@urql/exchange-persisted";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const url = process.env.PORTRAITS_URL ?? "http://127.0.0.1:8000/graphql";
// The user's access token (Supabase: session.access_token); read it per request, as it is refreshed.
const getToken = () => process.env.PORTRAITS_TOKEN;

// Subscriptions over graphql-transport-ws on the same /graphql path; the token goes in connection_init.
const wsClient = createClient({
  url: url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: () => ({ Authorization: `Bearer ${getToken()}` }),
});

const client = new Client({
  url,
  // The token on every HTTP request.
  fetchOptions: () => ({ headers: { Authorization: `Bearer ${getToken()}` } }),
  exchanges: [
    cacheExchange,
    // Queries by hash (by GET, so a CDN may cache them) once the server has seen them.
    persistedExchange({ preferGetForPersistedQueries: true }),
    fetchExchange,
    subscriptionExchange({
      forwardSubscription: (request) => ({
        subscribe: (sink) => ({ unsubscribe: wsClient.subscribe({ ...request, query: request.query ?? "" }, sink) }),
      }),
    }),
  ],
});

const CREATE_CHARACTER = gql`
  mutation CreateCharacter($input: CreateCharacterInput!) {
    createCharacter(input: $input) { id name }
  }
`;
const GENERATE_PORTRAIT = gql`
  mutation GeneratePortrait($characterId: ID!) {
    generateCharacterPortrait(input: { characterId: $characterId }) { id status }
  }
`;
const JOB_UPDATED = gql`
  subscription JobUpdated($id: ID!) {
    jobChanged(id: $id) { id status error libraryAsset { id } }
  }
`;
const LIBRARY = gql`
  query Library {
    viewer { id }
    libraryAssets(first: 10, tab: CHARACTERS) {
      edges { node { id path width height sourceJobId signedUrl { url expiresAt } } }
    }
  }
`;
const JOB = gql`
  query Job($id: ID!) {
    job(id: $id) { id status }
  }
`;

// urql reports errors in the result (result.error, a CombinedError) instead of throwing.
function dataOf(result) {
  if (result.error) throw result.error;
  return result.data;
}

const character = dataOf(await client.mutation(CREATE_CHARACTER, {
  input: { name: "Seraphine Vale", description: "A wandering alchemist with silver hair." },
})).createCharacter;

const job = dataOf(await client.mutation(GENERATE_PORTRAIT, { characterId: character.id }))
  .generateCharacterPortrait;

// The job as it is now first, then each change, until it has ended.
const ENDED = ["COMPLETED", "FAILED", "CANCELED"];
const statuses = [];
await new Promise((resolve, reject) => {
  const subscription = client.subscription(JOB_UPDATED, { id: job.id }).subscribe((result) => {
    if (result.error) return reject(result.error);
    statuses.push(result.data.jobChanged.status);
    if (ENDED.includes(result.data.jobChanged.status)) {
      subscription.unsubscribe();
      resolve();
    }
  });
});

const library = dataOf(await client.query(LIBRARY, {}, { requestPolicy: "network-only" }));
const asset = library.libraryAssets.edges.map(({ node }) => node).find((node) => node.sourceJobId === job.id);

// A signed URL is a plain GET: no token, it carries its own (an <img src> in a browser).
const image = await fetch(asset.signedUrl.url);
const bytes = new Uint8Array(await image.arrayBuffer());

// Errors carry extensions.code: a missing (or another user's) job is NOT_FOUND.
const { error } = await client.query(JOB, { id: crypto.randomUUID() });
const codes = error ? error.graphQLErrors.map((e) => e.extensions?.code) : [];

await wsClient.dispose();
console.log(JSON.stringify({
  viewer: library.viewer.id,
  character,
  job,
  statuses,
  asset,
  image: { status: image.status, contentType: image.headers.get("content-type"), size: bytes.length },
  missingJobCodes: codes,
}));
