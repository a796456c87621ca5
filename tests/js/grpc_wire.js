// HTTP/2 and gRPC wire points with two independent JavaScript gRPC stacks (issue 13):
// - connect-node, the transport @dapr/dapr's own gRPC client is built on, with the SDK's
//   generated Dapr service, sending every message gzip-compressed;
// - @grpc/grpc-js (a generic client: messages serialized by the Python test), gzip as its
//   default compression, and one call whose metadata is over the server's 64 KiB header list
//   made while other calls are in flight on the same connection.
//
// Run by tests/test_js_sdk.py: `node grpc_wire.js <report.json> <input.json>` with
// DAPR_GRPC_PORT in the environment. The input holds base64 request messages; the report
// holds, for every step, {ok: <base64 answer or value>} or {error: {code, message}}.
"use strict";

const fs = require("fs");
const grpc = require("@grpc/grpc-js");
const { createClient } = require("@connectrpc/connect");
const { createGrpcTransport, compressionGzip } = require("@connectrpc/connect-node");
const { Dapr } = require("@dapr/dapr/proto/dapr/proto/runtime/v1/dapr_pb.js");

const port = process.env.DAPR_GRPC_PORT;
const input = JSON.parse(fs.readFileSync(process.argv[3], "utf8"));

function outcome(promise) {
  return promise.then(
    (value) => ({ ok: value }),
    (err) => ({ error: { code: err && err.code !== undefined ? err.code : null, message: String(err && err.message ? err.message : err) } }),
  );
}

function unary(client, method, base64, metadata) {
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata || {})) md.set(k, v);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      `/dapr.proto.runtime.v1.Dapr/${method}`,
      (buf) => buf,
      (buf) => buf,
      Buffer.from(base64, "base64"),
      md,
      { deadline: Date.now() + 20000 },
      (err, answer) => (err ? reject(err) : resolve(answer.toString("base64"))),
    );
  });
}

async function main() {
  const r = {};

  // connect-node, as the SDK builds it, but compressing what it sends
  const transport = createGrpcTransport({ baseUrl: `http://127.0.0.1:${port}`, sendCompression: compressionGzip });
  const sdk = createClient(Dapr, transport);
  const value = new TextEncoder().encode("z".repeat(2 * 1024 * 1024)); // 2 MiB: gzip makes it small
  r.connectSave = await outcome(sdk.saveState({ storeName: input.store, states: [{ key: input.connectKey, value }] }).then(() => null));
  r.connectGet = await outcome(sdk.getState({ storeName: input.store, key: input.connectKey }).then((a) => a.data.length));

  // grpc-js, gzip for every message
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    "grpc.default_compression_algorithm": 2, // gzip
  });
  r.grpcSave = await outcome(unary(client, "SaveState", input.save));
  r.grpcGet = await outcome(unary(client, "GetState", input.get));

  // three calls at once on one connection; the middle one's metadata is over 64 KiB
  const calls = [
    unary(client, "GetState", input.get),
    unary(client, "GetState", input.get, { "x-big": "b".repeat(70 * 1024) }),
    unary(client, "GetState", input.get),
  ];
  r.concurrent = await Promise.all(calls.map(outcome));
  r.after = await outcome(unary(client, "GetState", input.get));
  client.close();
  return r;
}

main()
  .then((r) => fs.writeFileSync(process.argv[2], JSON.stringify(r, null, 2)))
  .catch((err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
