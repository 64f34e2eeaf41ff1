// The GraphQL-over-HTTP audit (graphql-http's auditServer) against one live server, its results as JSON on stdout.
// Usage: node audit.mjs http://127.0.0.1:PORT/graphql
// Prints [{"id", "name", "status": "ok" | "notice" | "warn" | "error", "reason"?, "status_code"?}, ...]: "name" starts
// with MUST, SHOULD or MAY; a failed MUST is an "error", a failed SHOULD a "warn", a failed MAY a "notice".
import { auditServer } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs URL');
  process.exit(2);
}
const results = await auditServer({ url });
const printed = results.map((result) => ({
  id: result.id,
  name: result.name,
  status: result.status,
  ...(result.status === 'ok' ? {} : { reason: result.reason, status_code: result.response.status }),
}));
process.stdout.write(JSON.stringify(printed));
