// Checks Flux sources with the real Flux compiler (libflux, compiled to wasm in
// @influxdata/flux-lsp-browser). There is no InfluxDB 2 server in the test environment, so
// this is what proves that every Flux text the product sends parses and type-checks.
//
// Input (stdin):  a JSON array of Flux sources (strings).
// Output (stdout): a JSON array, one object per source, in order:
//   {"valid": bool, "errors": [str], "strings": [str], "regexes": [str]}
//   valid   - Flux.is_valid() (parse + semantic check: types, builtin signatures) and no
//             error diagnostic from the language server
//   errors  - the compiler's messages ("line:col: message"), from the LSP diagnostics
//   strings - values of the string literals as the parser read them (after unescaping),
//             regexes - same for regex literals: lets tests prove the escaping round-trips.
// Exit codes: 0 ok, 2 bad input, 3 package missing or of an unexpected layout.
//
// Why the glue is rewritten: the package is a wasm-bindgen *bundler* build. Its
// flux-lsp-browser_bg.js starts with `import * as wasm from './flux-lsp-browser_bg.wasm'`
// (only bundlers resolve that) and its last lines read `wasm.memory` at load time. We load
// the glue from memory (a data: URL) with the first line replaced by a setter and the two
// trailing memory reads moved into it; then instantiate the .wasm with the glue's exports as
// its imports, and hand the instance's exports to the setter. Nothing is written to disk and
// the installed package stays untouched.

import { readFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const PKG = '@influxdata/flux-lsp-browser';
const pkgDir = fileURLToPath(new URL(`./node_modules/${PKG}/`, import.meta.url));
const GLUE = 'flux-lsp-browser_bg.js';
const WASM = 'flux-lsp-browser_bg.wasm';

// The wasm logs through console.info/log (e.g. "language server initialized"); stdout is
// reserved for the JSON answer.
for (const level of ['log', 'info', 'debug', 'warn']) console[level] = console.error;

function die(code, message) {
  process.stderr.write(`fluxcheck: ${message}\n`);
  process.exit(code);
}

async function loadCompiler() {
  if (!existsSync(pkgDir + GLUE) || !existsSync(pkgDir + WASM)) {
    die(3, `${PKG} is not installed in ${pkgDir}; run: npm ci --prefix tests/fluxcheck`);
  }
  let glue = readFileSync(pkgDir + GLUE, 'utf8');
  const importLine = `import * as wasm from './${WASM}';`;
  const memoryInit =
    'cachedInt32Memory0 = new Int32Array(wasm.memory.buffer);\n' +
    'cachedUint8Memory0 = new Uint8Array(wasm.memory.buffer);';
  if (!glue.startsWith(importLine) || !glue.includes(memoryInit)) {
    die(3, `unexpected layout of ${GLUE} (package version changed?); adapt check.mjs`);
  }
  // Function declarations are hoisted, so the setter may be the first line; it assigns the
  // module-level `let` caches only when called, i.e. after the module has been evaluated.
  const setter = 'let wasm; export function __fluxcheck_set_wasm(exports) { wasm = exports; ' +
    memoryInit.replaceAll('\n', ' ') + ' }';
  glue = setter + glue.slice(importLine.length).replace(memoryInit, '');
  const bindings = await import('data:text/javascript;base64,' + Buffer.from(glue).toString('base64'));

  const module = await WebAssembly.compile(readFileSync(pkgDir + WASM));
  const imports = {};
  for (const { module: name } of WebAssembly.Module.imports(module)) imports[name] = bindings;
  const instance = await WebAssembly.instantiate(module, imports);
  bindings.__fluxcheck_set_wasm(instance.exports);
  return bindings;
}

// The language server gives the messages (Flux.is_valid() only says yes or no).
async function startServer(flux) {
  const server = new flux.Lsp();
  const diagnostics = new Map(); // uri -> latest list
  server.onMessage((raw) => {
    const msg = JSON.parse(raw);
    if (msg.method === 'textDocument/publishDiagnostics') {
      diagnostics.set(msg.params.uri, msg.params.diagnostics);
    }
  });
  server.run().catch((error) => die(3, `language server stopped: ${error}`));
  const send = (obj) => server.send(JSON.stringify({ jsonrpc: '2.0', ...obj }));
  await send({ id: 1, method: 'initialize', params: { processId: null, rootUri: null, capabilities: {} } });
  await send({ method: 'initialized', params: {} });
  return { send, diagnostics };
}

function literals(ast) {
  const strings = [];
  const regexes = [];
  const parseErrors = [];
  const walk = (node) => {
    if (Array.isArray(node)) { node.forEach(walk); return; }
    if (!node || typeof node !== 'object') return;
    if (node.type === 'StringLiteral') strings.push(node.value);
    if (node.type === 'RegexpLiteral') regexes.push(node.value);
    if (Array.isArray(node.errors)) for (const e of node.errors) parseErrors.push(e.msg ?? String(e));
    for (const [key, value] of Object.entries(node)) if (key !== 'location') walk(value);
  };
  walk(ast);
  return { strings, regexes, parseErrors };
}

async function main() {
  let sources;
  try {
    sources = JSON.parse(readFileSync(0, 'utf8'));
  } catch (error) {
    die(2, `stdin is not JSON: ${error.message}`);
  }
  if (!Array.isArray(sources) || !sources.every((s) => typeof s === 'string')) {
    die(2, 'stdin must be a JSON array of strings');
  }
  const flux = await loadCompiler();
  const lsp = await startServer(flux);
  const results = [];
  for (const [index, source] of sources.entries()) {
    const checked = new flux.Flux(source);
    const isValid = checked.is_valid();
    checked.free();

    // One directory per source: the server analyses the files of a directory together.
    const uri = `file:///fluxcheck/${index}/main.flux`;
    lsp.diagnostics.delete(uri);
    await lsp.send({
      method: 'textDocument/didOpen',
      params: { textDocument: { uri, languageId: 'flux', version: 1, text: source } },
    });
    for (let wait = 0; !lsp.diagnostics.has(uri) && wait < 200; wait++) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    const diagnostics = lsp.diagnostics.get(uri) ?? [];
    await lsp.send({ method: 'textDocument/didClose', params: { textDocument: { uri } } });

    const errors = diagnostics
      .filter((d) => (d.severity ?? 1) === 1)
      .map((d) => `${d.range.start.line + 1}:${d.range.start.character + 1}: ${d.message}`);
    const { strings, regexes, parseErrors } = literals(flux.parse(source));
    // The server reports syntax errors too; the parser's own list is a fallback only.
    if (errors.length === 0) errors.push(...parseErrors);
    if (!isValid && errors.length === 0) errors.push('invalid (the compiler gave no message)');
    results.push({ valid: isValid && errors.length === 0, errors, strings, regexes });
  }
  // Exit only once the answer is flushed: stdout to a pipe is asynchronous in node, and
  // exiting right after write() cuts the output at 64 KiB. Exit at all because the
  // language server's run() promise would keep node alive.
  process.stdout.write(JSON.stringify(results), () => process.exit(0));
}

main().catch((error) => die(3, error?.stack ?? String(error)));
