// Drives devinit's gRPC state API with the official Dapr JavaScript SDK (@dapr/dapr over
// connect-node's gRPC transport on Node's http2: an HTTP/2 implementation independent of the
// Python SDK's C-core).
//
// Run by tests/test_js_sdk.py: `node grpc_state.js <report.json>` with DAPR_GRPC_PORT, STORE
// and KEY_PREFIX in the environment. Like state.js it asserts nothing: every step's result
// (or the error the SDK surfaced, with its gRPC code) goes into the JSON report.
"use strict";

const { CommunicationProtocolEnum, StateConcurrencyEnum } = require("@dapr/dapr");
const { drive } = require("./drive");

async function attempt(fn) {
  try {
    const result = await fn();
    return { ok: result === undefined ? null : result };
  } catch (err) {
    return { error: { code: err && err.code !== undefined ? err.code : null, message: String(err && err.message ? err.message : err) } };
  }
}

drive(CommunicationProtocolEnum.GRPC, async ({ client, state, store, p }) => {
  const r = {};
  const big = "x".repeat(300 * 1024); // over HTTP/2's default 64 KiB windows both ways

  r.save = await attempt(() =>
    state.save(store, [
      { key: `${p}-a`, value: { n: 1, s: "é" } },
      { key: `${p}-s`, value: "text" },
      { key: `${p}-big`, value: big },
    ]),
  );
  r.get = await attempt(() => state.get(store, `${p}-a`));
  r.getString = await attempt(() => state.get(store, `${p}-s`));
  r.getBigLength = await attempt(async () => (await state.get(store, `${p}-big`)).length);
  r.getMissing = await attempt(() => state.get(store, `${p}-missing`));
  r.bulk = await attempt(() => state.getBulk(store, [`${p}-a`, `${p}-missing`, `${p}-s`]));
  const etag1 = r.bulk.ok && r.bulk.ok[0] ? r.bulk.ok[0].etag : "";

  r.saveCurrentEtag = await attempt(() => state.save(store, [{ key: `${p}-a`, value: { n: 2 }, etag: etag1 }]));
  r.saveStaleEtag = await attempt(() => state.save(store, [{ key: `${p}-a`, value: { n: 3 }, etag: etag1 }]));
  r.afterStale = await attempt(() => state.get(store, `${p}-a`));
  r.firstWrite = await attempt(() =>
    state.save(store, [{ key: `${p}-a`, value: 4, options: { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE } }]),
  );
  r.transaction = await attempt(() =>
    state.transaction(store, [
      { operation: "upsert", request: { key: `${p}-t1`, value: "one" } }, // the SDK sends gRPC values as strings or bytes only
      { operation: "delete", request: { key: `${p}-s` } },
    ]),
  );
  r.afterTransaction = await attempt(() => state.getBulk(store, [`${p}-t1`, `${p}-s`]));
  r.delete = await attempt(() => state.delete(store, `${p}-t1`));
  r.afterDelete = await attempt(() => state.get(store, `${p}-t1`));
  r.unknownStore = await attempt(() => state.get("no-such-store", `${p}-a`));
  r.many = await attempt(async () => {
    const got = await Promise.all(Array.from({ length: 200 }, () => state.get(store, `${p}-s`)));
    return got.filter((v) => v === "").length; // ${p}-s was deleted: all 200 read nothing
  });

  return r;
});
