// Drives devinit's HTTP state API with the official Dapr JavaScript SDK (@dapr/dapr).
//
// Run by tests/test_js_sdk.py: `node state.js <report.json>` with DAPR_HTTP_PORT, STORE and
// KEY_PREFIX in the environment. It asserts nothing itself: every step's result (or the
// error the SDK surfaced) goes into the JSON report, and the Python test checks it.
"use strict";

const { CommunicationProtocolEnum, StateConcurrencyEnum } = require("@dapr/dapr");
const { drive } = require("./drive");

// The SDK reports HTTP errors as Error(JSON.stringify({error, error_msg, status})); save()
// and delete() return {error} instead of throwing. Both become {error: {status, body}}.
function failure(err) {
  let detail;
  try {
    detail = JSON.parse(err.message);
  } catch (_e) {
    return { error: { status: null, body: String(err) } };
  }
  let body = detail.error_msg;
  try {
    body = JSON.parse(body);
  } catch (_e) {
    // not JSON: keep the text
  }
  return { error: { status: detail.status, body } };
}

function outcome(result) {
  if (result && result.error instanceof Error) {
    return failure(result.error);
  }
  return { ok: result === undefined ? null : result };
}

async function attempt(fn) {
  try {
    return outcome(await fn());
  } catch (err) {
    return failure(err);
  }
}

drive(CommunicationProtocolEnum.HTTP, async ({ client, state, store, p }) => {
  const r = {};

  r.metadata = await attempt(() => client.metadata.get());
  r.save = await attempt(() =>
    state.save(store, [
      { key: `${p}-a`, value: { n: 1, s: "é" } },
      { key: `${p}-s`, value: "text" },
    ]),
  );
  r.get = await attempt(() => state.get(store, `${p}-a`));
  r.getString = await attempt(() => state.get(store, `${p}-s`));
  r.getMissing = await attempt(() => state.get(store, `${p}-missing`));
  r.bulk = await attempt(() => state.getBulk(store, [`${p}-a`, `${p}-missing`, `${p}-s`]));
  const etag1 = r.bulk.ok[0].etag;

  r.deleteWrongEtag = await attempt(() => state.delete(store, `${p}-a`, { etag: `${etag1}0` }));
  r.afterDeleteWrongEtag = await attempt(() => state.get(store, `${p}-a`));

  r.saveCurrentEtag = await attempt(() => state.save(store, [{ key: `${p}-a`, value: { n: 2 }, etag: etag1 }]));
  r.saveStaleEtag = await attempt(() => state.save(store, [{ key: `${p}-a`, value: { n: 3 }, etag: etag1 }]));
  r.afterStale = await attempt(() => state.getBulk(store, [`${p}-a`]));
  const etag2 = r.afterStale.ok[0].etag;

  r.firstWrite = await attempt(() =>
    state.save(store, [{ key: `${p}-a`, value: 4, options: { concurrency: StateConcurrencyEnum.CONCURRENCY_FIRST_WRITE } }]),
  );

  r.deleteRightEtag = await attempt(() => state.delete(store, `${p}-a`, { etag: etag2 }));
  r.afterDelete = await attempt(() => state.get(store, `${p}-a`));

  // transaction() posts {"operations": [...], "metadata": null}.
  r.transaction = await attempt(() =>
    state.transaction(store, [
      { operation: "upsert", request: { key: `${p}-t1`, value: { t: 1 } } },
      { operation: "upsert", request: { key: `${p}-t2`, value: "two" } },
      { operation: "delete", request: { key: `${p}-s` } },
    ]),
  );
  r.afterTransaction = await attempt(() => state.getBulk(store, [`${p}-t1`, `${p}-t2`, `${p}-s`]));
  r.staleTransaction = await attempt(() =>
    state.transaction(store, [
      { operation: "upsert", request: { key: `${p}-t3`, value: 3 } },
      { operation: "upsert", request: { key: `${p}-t1`, value: "x", etag: "stale-etag" } },
    ]),
  );
  r.afterStaleTransaction = await attempt(() => state.getBulk(store, [`${p}-t1`, `${p}-t3`]));
  r.unknownStore = await attempt(() => state.get("no-such-store", `${p}-a`));

  return r;
});
