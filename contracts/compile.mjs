// Compile contracts/src/**/*.sol and contracts/test/**/*.sol with solc-js (WebAssembly,
// no compiler download) and write one artifact per contract to artifacts/<Name>.json
// (test mocks to artifacts/test/<Name>.json).
//
// Artifacts are committed: the Python runtime never needs Node. Each records the
// compiler, the settings, the OpenZeppelin version and the sha256 of every source
// it was built from, so `ledger._artifacts.check_sources()` can tell when a source
// changed without recompiling. Output is deterministic (no timestamps, sorted keys).
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import solc from "solc";

const ROOT = dirname(fileURLToPath(import.meta.url));
const OUT = join(ROOT, "artifacts");
const SOURCE_DIRS = ["src", "test"];

// py-evm (the embedded chain) implements Prague; solc 0.8.37 defaults to Osaka.
const SETTINGS = {
  evmVersion: "prague",
  optimizer: { enabled: true, runs: 200 },
  metadata: { bytecodeHash: "ipfs" },
};

const sha256 = (data) => createHash("sha256").update(data).digest("hex");

function walk(dir) {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return walk(p);
    return e.name.endsWith(".sol") ? [p] : [];
  });
}

const unitName = (path) => relative(ROOT, path).split(sep).join("/");

function findImport(name) {
  if (name.startsWith("@openzeppelin/contracts/")) {
    return { contents: readFileSync(join(ROOT, "node_modules", name), "utf8") };
  }
  return { error: `import not found: ${name}` };
}

const ozVersion = JSON.parse(
  readFileSync(join(ROOT, "node_modules/@openzeppelin/contracts/package.json"), "utf8"),
).version;

const files = SOURCE_DIRS.flatMap((d) => walk(join(ROOT, d))).sort();
const input = {
  language: "Solidity",
  sources: Object.fromEntries(
    files.map((f) => [unitName(f), { content: readFileSync(f, "utf8") }]),
  ),
  settings: {
    ...SETTINGS,
    outputSelection: {
      "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object", "metadata"] },
    },
  },
};

const output = JSON.parse(solc.compile(JSON.stringify(input), { import: findImport }));
const problems = (output.errors ?? []).filter((e) => e.severity === "error");
// Our sources must compile without warnings; OpenZeppelin's own (e.g. its note on
// transient storage in ReentrancyGuardTransient) are not ours to fix.
const ours = (e) => !e.sourceLocation?.file?.startsWith("@openzeppelin/");
for (const e of (output.errors ?? []).filter(ours)) console.error(e.formattedMessage);
if (problems.length > 0) process.exit(1);

const sortKeys = (value) => {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.keys(value).sort().map((k) => [k, sortKeys(value[k])]));
  }
  return value;
};

rmSync(OUT, { recursive: true, force: true });
let written = 0;
for (const [sourceName, contracts] of Object.entries(output.contracts)) {
  if (sourceName.startsWith("@openzeppelin/")) continue;
  for (const [name, c] of Object.entries(contracts)) {
    if (c.evm.bytecode.object === "") continue; // interfaces and abstract contracts
    const metadata = JSON.parse(c.metadata);
    const sources = Object.fromEntries(
      Object.keys(metadata.sources)
        .sort()
        .map((s) => [s, { sha256: sha256(input.sources[s]?.content ?? findImport(s).contents) }]),
    );
    const artifact = {
      contractName: name,
      sourceName,
      abi: c.abi,
      bytecode: "0x" + c.evm.bytecode.object,
      deployedBytecode: "0x" + c.evm.deployedBytecode.object,
      compiler: { name: "solc-js", version: solc.version() },
      settings: SETTINGS,
      openzeppelin: ozVersion,
      compileScriptSha256: sha256(readFileSync(fileURLToPath(import.meta.url))),
      sources,
    };
    const dir = sourceName.startsWith("test/") ? join(OUT, "test") : OUT;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${name}.json`), JSON.stringify(sortKeys(artifact), null, 2) + "\n");
    written += 1;
  }
}
console.log(`solc ${solc.version()}, OpenZeppelin ${ozVersion}: ${written} artifacts in ${relative(process.cwd(), OUT) || "."}`);
