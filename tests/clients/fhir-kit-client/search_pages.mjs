// Drives fhir-kit-client (the npm package pinned in package.json) against a FHIR server:
// one search, then nextPage to the last page and prevPage back to the first, following the
// Bundle.link URLs the server answered. Prints one JSON object on stdout, which
// tests/http/test_fhir_client.py checks; exits 1 with {"error": ...} when the client throws.
//
// Usage: node search_pages.mjs <base URL> <bearer token> <resource type> <search params JSON>
import { Client } from 'fhir-kit-client';

const [baseUrl, token, resourceType, params] = process.argv.slice(2);
const client = new Client({ baseUrl, bearerToken: token });

function page(bundle) {
  return {
    total: bundle.total ?? null,
    ids: (bundle.entry ?? []).map((entry) => entry.resource.id),
    links: Object.fromEntries((bundle.link ?? []).map((link) => [link.relation, link.url])),
  };
}

try {
  const forward = [];
  let bundle = await client.search({ resourceType, searchParams: JSON.parse(params) });
  forward.push(page(bundle));
  for (let next = client.nextPage({ bundle }); next; next = client.nextPage({ bundle })) {
    bundle = await next;
    forward.push(page(bundle));
  }
  const backward = [];
  for (let prev = client.prevPage({ bundle }); prev; prev = client.prevPage({ bundle })) {
    bundle = await prev;
    backward.push(page(bundle));
  }
  console.log(JSON.stringify({ forward, backward }));
} catch (error) {
  const response = error?.response;
  console.log(
    JSON.stringify({ error: String(error), status: response?.status ?? null, body: response?.data ?? null })
  );
  process.exit(1);
}
