// Hardhat 2 as a real JSON-RPC node for the ledger's integration tests:
//   HARDHAT_DISABLE_TELEMETRY_PROMPT=true npx hardhat node --hostname 127.0.0.1 --port N
// Hardhat never compiles here: contracts are built by compile.mjs (solc-js) into
// artifacts/, which the Python side deploys. This file is CommonJS (.cjs) because
// package.json says "type": "module", and Hardhat 2 loads its config with require().
//
// Hardhat's cache and artifacts go to $VEILX_HARDHAT_CACHE (default: a directory
// under the OS temp dir), so running the node leaves nothing in the repository.
const os = require("node:os");
const path = require("node:path");

const cacheRoot =
  process.env.VEILX_HARDHAT_CACHE || path.join(os.tmpdir(), "veilx-hardhat");

/** @type {import("hardhat/config").HardhatUserConfig} */
module.exports = {
  defaultNetwork: "hardhat",
  networks: {
    hardhat: {
      chainId: 31337,
      // Our artifacts are compiled for evmVersion prague (transient storage needs
      // Cancun or later); Hardhat 2.29 supports "prague".
      hardfork: "prague",
      mining: { auto: true, interval: 0 },
    },
  },
  paths: {
    sources: "./src",
    cache: path.join(cacheRoot, "cache"),
    artifacts: path.join(cacheRoot, "artifacts"),
  },
};
