// Apollo Client 4 and Portraits: create a character, generate its portrait, follow the job over a websocket,
// list the library with signed URLs and download the image. Prints what it saw as JSON.
//   PORTRAITS_URL=http://127.0.0.1:8000/graphql PORTRAITS_TOKEN=<access token> node apollo.mjs
// In a browser, leave out the "ws" import and webSocketImpl: browsers have WebSocket.
import { ApolloClient, ApolloLink, CombinedGraphQLErrors, HttpLink, InMemoryCache, gql } from "@apollo/client";
import { SetContextLink } from "@apollo/client/link/context";
import { PersistedQueryLink } from "@apollo/client/link/persisted-queries";
import { GraphQLWsLink } from "@apollo/client/link/subscriptions";
import { OperationTypeNode } from "graphql";
import { createClient } from "graphql-ws";
import WebSocket from "ws";

const url = process.env.PORTRAITS_URL ?? "http://127.0.0.1:8000/graphql";
// The user's access token (Supabase: session.access_token); read it per request, as it is refreshed.
const getToken = () => process.env.PORTRAITS_TOKEN;

// SHA-256 in lowercase hex with Web Crypto, which browsers and Node 20 both have.
async function sha256(text) {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return Array.from(new Uint8Array(digest), (byte) => byte.toString(16).padStart(2, "0")).join("");
}

// Queries and mutations over HTTP: the token on every request, and documents sent by hash
// (queries by GET, so a CDN may cache them) once the server has seen them.
const httpLink = ApolloLink.from([
  new SetContextLink(({ headers }) => ({ headers: { ...headers, Authorization: `Bearer ${getToken()}` } })),
  new PersistedQueryLink({ sha256, useGETForHashedQueries: true }),
  new HttpLink({ uri: url }),
]);

// Subscriptions over graphql-transport-ws on the same /graphql path; the token goes in connection_init.
const wsClient = createClient({
  url: url.replace(/^http/, "ws"),
  webSocketImpl: WebSocket,
  connectionParams: () => ({ Authorization: `Bearer ${getToken()}` }),
});

const client = new ApolloClient({
  link: ApolloLink.split(
    ({ operationType }) => operationType === OperationTypeNode.SUBSCRIPTION,
    new GraphQLWsLink(wsClient),
    httpLink,
  ),
  cache: new InMemoryCache(),
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

const { data: created } = await client.mutate({
  mutation: CREATE_CHARACTER,
  variables: { input: { name: "Seraphine Vale", description: "A wandering alchemist with silver hair." } },
});
const character = created.createCharacter;

const { data: generated } = await client.mutate({
  mutation: GENERATE_PORTRAIT,
  variables: { characterId: character.id },
});
const job = generated.generateCharacterPortrait;

// The job as it is now first, then each change; the subscription completes once the job has ended.
const statuses = [];
await new Promise((resolve, reject) => {
  client.subscribe({ query: JOB_UPDATED, variables: { id: job.id } }).subscribe({
    next: ({ data, error }) => (error ? reject(error) : statuses.push(data.jobChanged.status)),
    error: reject,
    complete: resolve,
  });
});

const { data: library } = await client.query({ query: LIBRARY, fetchPolicy: "network-only" });
const asset = library.libraryAssets.edges.map(({ node }) => node).find((node) => node.sourceJobId === job.id);

// A signed URL is a plain GET: no token, it carries its own (an <img src> in a browser).
const image = await fetch(asset.signedUrl.url);
const bytes = new Uint8Array(await image.arrayBuffer());

// Errors carry extensions.code: a missing (or another user's) job is NOT_FOUND.
const { error } = await client.query({ query: JOB, variables: { id: crypto.randomUUID() }, errorPolicy: "all" });
const codes = CombinedGraphQLErrors.is(error) ? error.errors.map((e) => e.extensions?.code) : [];

await wsClient.dispose();
client.stop();
console.log(JSON.stringify({
  viewer: library.viewer.id,
  character,
  job,
  statuses,
  asset,
  image: { status: image.status, contentType: image.headers.get("content-type"), size: bytes.length },
  missingJobCodes: codes,
}));
